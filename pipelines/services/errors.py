"""Errors a user can cause, and the one list of them that the command line and the API use.

Each message says what went wrong and what to do; the command line prints it as one line
``error: ...`` and exits 2, the HTTP API answers 4xx with it.
"""

from __future__ import annotations

import errno


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


#: ``errno`` values that mean "the filesystem has no room": the disk is full or a quota is hit.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: SQLSTATE of PostgreSQL's ``disk_full`` and SQLite's result code ``SQLITE_FULL``.
PG_DISK_FULL, SQLITE_FULL = "53100", 13


def out_of_space(exc: BaseException) -> str | None:
    """One line when ``exc`` (or what caused it) says the disk is full or a quota is hit.

    Covers an ``OSError`` with ENOSPC/EDQUOT, SQLite's "database or disk is full" and
    PostgreSQL's ``disk_full``; None for anything else.
    """
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            what = "disk quota exceeded" if e.errno == errno.EDQUOT else "no space left on device"
            return f"{what} writing {e.filename}" if e.filename else what
        orig = getattr(e, "orig", None)
        if getattr(orig, "sqlite_errorcode", None) == SQLITE_FULL:
            return "no space left for the SQLite database (database or disk is full)"
        if getattr(orig, "sqlstate", None) == PG_DISK_FULL:
            return f"the database server has no space left: {first_line(orig)}"
    return None


def database_unavailable(exc: BaseException) -> str | None:
    """One line when ``exc`` says the database cannot answer now; None for anything else.

    "Now" is the point: the server is down, restarting or unreachable, a connection was lost,
    the pool timed out, or SQLite's busy timeout ran out ("database is locked"). Asking again
    later can succeed, so the API answers 503 with ``Retry-After``. A full disk is not this
    (:func:`out_of_space`), nor is a bad query (a bug).
    """
    from sqlalchemy import exc as sa

    if out_of_space(exc) is not None:
        return None
    if isinstance(exc, DatabaseError):
        return str(exc)
    if isinstance(exc, sa.TimeoutError):
        return f"no database connection became free in time ({first_line(exc)})"
    lost = (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)
    if isinstance(exc, lost) or (isinstance(exc, sa.DBAPIError) and exc.connection_invalidated):
        return f"the database does not answer: {first_line(exc)}"
    return None


def fault_message(exc: BaseException) -> str | None:
    """The one line the command line prints for a known fault (not a bug), else None."""
    if (reason := out_of_space(exc)) is not None:
        return f"{reason}; free space (SIAMID_HOME, or the database's disk) and run again"
    if (reason := database_unavailable(exc)) is not None:
        if isinstance(exc, DatabaseError):
            return reason
        return f"{reason}; check SIAMID_DATABASE_URL and that its server runs, then run again"
    return None


def worth_retrying(task: object, task_run: object, state: object) -> bool:
    """A Prefect ``retry_condition_fn``: retry a failed task unless the disk is full.

    A database that does not answer may well answer in the seconds before a retry; a full disk
    will not have emptied, and a retry would only delay the run's clear error.
    """
    exc = getattr(state, "data", None)
    return not (isinstance(exc, BaseException) and out_of_space(exc) is not None)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes / contexts, nearest first (a wrapped OSError counts)."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and all(e is not s for s in seen) and len(seen) < 8:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def first_line(exc: BaseException) -> str:
    """The first line of the error (of the driver's own error for a SQLAlchemy one)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
