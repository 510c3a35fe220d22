"""Crash-safe file helpers shared by the index and the vector store.

The pattern is the classic one: write to a temporary file in the *same* directory (so the
final rename never crosses a filesystem), fsync the file, rename it into place, fsync the
directory (so the rename itself survives a power loss). Readers therefore only ever see a
complete old file or a complete new file. Temporary files carry ``TMP_MARKER`` in their name
so listing code can skip them and garbage collection can find them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

#: Substring present in every temporary file name we create (and in no final file name).
TMP_MARKER = ".tmp-"

_HASH_CHUNK = 1 << 20


def tmp_path_for(final: Path) -> Path:
    """A unique hidden temp path next to ``final`` (same dir => rename is atomic)."""
    return final.parent / f".{final.name}{TMP_MARKER}{uuid.uuid4().hex}"


def is_tmp_name(name: str) -> bool:
    return name.startswith(".") and TMP_MARKER in name


def fsync_path(path: Path) -> None:
    """fsync a file that some other code (e.g. faiss' C++ writer) has already closed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Persist a rename/unlink in ``path``. Best effort: some filesystems refuse dir fsync."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - EINVAL on some network filesystems
        logger.debug("directory fsync of %s not supported: %s", path, exc)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def commit_tmp(tmp: Path, final: Path, *, overwrite: bool) -> None:
    """Move a fully written and fsynced ``tmp`` to ``final``.

    ``overwrite=False`` guarantees an existing ``final`` is never replaced (vector shards are
    immutable once committed, SQL may already point at them): a hard link fails atomically with
    EEXIST, unlike ``os.replace``. On filesystems without hard links we fall back to
    exists-check + replace, which is only racy against a concurrent writer choosing the very
    same uuid-based name.
    """
    if overwrite:
        os.replace(tmp, final)
    else:
        try:
            os.link(tmp, final)
        except FileExistsError:
            unlink_quiet(tmp)
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                unlink_quiet(tmp)
                raise
            if final.exists():
                unlink_quiet(tmp)
                raise FileExistsError(errno.EEXIST, "refusing to overwrite", str(final)) from exc
            os.replace(tmp, final)
        else:
            # A crash right here leaves a tmp file behind; it is garbage-collected later.
            unlink_quiet(tmp)
    fsync_dir(final.parent)


def unlink_quiet(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
