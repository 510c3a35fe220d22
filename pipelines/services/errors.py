"""Errors a user can cause, and the one list of them that the command line and the API use.

Each message says what went wrong and what to do; the command line prints it as one line
``error: ...`` and exits 2, the HTTP API answers 4xx with it.
"""

from __future__ import annotations


class SiamidError(Exception):
    """Base class: the message says what went wrong and what to do."""


class TrainingDataError(SiamidError):
    """The data cannot train a model (empty, one image per person, too few people)."""


class ModelError(SiamidError):
    """No usable trained model (none trained, checkpoint missing or altered)."""


class DatabaseError(SiamidError):
    """The database URL cannot be used (no server, wrong credentials, unknown driver)."""


class GalleryError(SiamidError, ValueError):
    """A gallery source that cannot be imported at all (missing folder, malformed manifest)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a user can cause: shown as one clear line, never a traceback."""
    from index.errors import VectorIndexError
    from siamese.images import ImageRejected
    from storage.identities import UnknownIdentityError
    from storage.indexes import NoPublishedIndexError
    from storage.registry import UnknownModelVersionError

    return (
        SiamidError,
        ImageRejected,
        UnknownIdentityError,
        UnknownModelVersionError,
        NoPublishedIndexError,
        VectorIndexError,
    )
