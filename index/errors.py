"""Exceptions raised by the ``index`` package.

Every error a caller (or an operator) can cause derives from :class:`VectorIndexError`, so the
CLI / flows can catch one base class and print the message, which always says what to do next.
Several classes also derive from the matching builtin (``ValueError``, ``FileNotFoundError``,
``LookupError``) so generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "VectorIndexError",
    "DimensionMismatchError",
    "InvalidInputError",
    "DuplicateIdError",
    "UnsupportedIndexError",
    "IndexNotTrainedError",
    "TrainingDataError",
    "ReadOnlyIndexError",
    "IndexFileMissingError",
    "IndexChecksumError",
    "IndexCorruptError",
    "VectorStoreError",
    "VectorRefError",
    "ShardCorruptError",
]

#: Printed in messages about damaged / missing persisted indexes. The index is derived data:
#: it can always be rebuilt from the vector store + SQL, so that is the fix we point to.
REPAIR_HINT = "rebuild it with `siamid doctor --repair` (re-indexes from the vector store)"


class VectorIndexError(Exception):
    """Base class of every error raised by ``index`` that a caller can cause or fix."""


class DimensionMismatchError(VectorIndexError, ValueError):
    """Vectors / an index / a store have a different dimensionality than expected."""

    def __init__(self, message: str, *, expected: int | None = None, got: int | None = None):
        super().__init__(message)
        self.expected = expected
        self.got = got


class InvalidInputError(VectorIndexError, ValueError):
    """Bad dtype, layout, non-finite values, bad ids or bad ``k``."""


class DuplicateIdError(InvalidInputError):
    """An id is already stored in the index (or repeated inside one batch)."""


class UnsupportedIndexError(VectorIndexError, ValueError):
    """A factory string / metric combination or an operation faiss does not support."""


class IndexNotTrainedError(VectorIndexError):
    """``add``/``search`` on an index that needs ``train()`` first (IVF, PQ)."""


class TrainingDataError(VectorIndexError, ValueError):
    """Not enough (or unusable) training vectors for the index structure."""


class ReadOnlyIndexError(VectorIndexError):
    """Mutation of an index loaded with ``mmap=True``."""


class IndexFileMissingError(VectorIndexError, FileNotFoundError):
    """The persisted index file does not exist."""


class IndexChecksumError(VectorIndexError):
    """The persisted index file does not match the sha256 recorded when it was saved."""


class IndexCorruptError(VectorIndexError):
    """faiss could not parse the persisted index file."""


class VectorStoreError(VectorIndexError):
    """Base class of vector-store problems."""


class VectorRefError(VectorStoreError, LookupError):
    """A vector ref is malformed or points to a missing shard / row."""


class ShardCorruptError(VectorStoreError):
    """A shard file is unreadable or has the wrong dtype / shape."""
