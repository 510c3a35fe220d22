"""Run locks: one indexing run (detection, embedding, publishing) at a time per database.

Two runs started at once would list the same pending images and embed them twice (the unique
key would then fail one of them, late). The second run waits for the first, up to a timeout,
or stops at once with :class:`RunLockedError` naming the run that holds the lock.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a fixed key, held by a
  connection of its own for the whole run. The server releases it when that connection ends, so
  a killed run never leaves it behind. The connection's ``application_name`` names the run.
- SQLite (and any other database): ``flock`` on a file beside the database file, released by the
  kernel when the process ends; the file says which run holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import Connection, Engine, text

from pipelines.services.errors import SiamidError
from pipelines.services.runtime import Runtime

logger = logging.getLogger(__name__)

#: The second number of each lock's PostgreSQL advisory key (``pg_locks.objid``).
#: ``index`` is the only one: :mod:`pipelines.services.indexing` holds it for every step.
LOCKS: dict[str, int] = {"index": 1}
#: The first number of the advisory key (``pg_locks.classid``): siamid's, fixed.
PG_LOCK_CLASS = 0x51A1D
POLL_SECONDS = 0.5


class RunLockedError(SiamidError):
    """Another run holds the lock and did not release it in time."""


class _Lock(Protocol):
    def try_acquire(self) -> bool: ...
    def holder(self) -> str: ...
    def release(self) -> None: ...  # also when never acquired: frees what trying opened


def this_run(name: str) -> str:
    """How a run is named to the runs that wait for it."""
    return f"siamid {name}, pid {os.getpid()} on {socket.gethostname()}"


@contextlib.contextmanager
def run_lock(rt: Runtime, name: str, *, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the ``name`` lock of ``rt``'s database for the block.

    ``wait_seconds``: how long to wait for a run that holds it (0: do not wait); then
    :class:`RunLockedError` says which run that is.
    """
    if name not in LOCKS:
        raise ValueError(f"unknown run lock {name!r}; expected one of {', '.join(LOCKS)}")
    if wait_seconds < 0:
        raise ValueError(f"wait_seconds must be 0 or more, got {wait_seconds}")
    lock = _lock_for(rt, name)
    try:
        deadline = time.monotonic() + wait_seconds
        waiting = False
        while not lock.try_acquire():
            holder = lock.holder()
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f" and did not finish within {wait_seconds:g} s" if wait_seconds else ""
                raise RunLockedError(
                    f"another {name} run is using this database ({holder}){waited}; let it "
                    "finish, or give --wait SECONDS to wait for it"
                )
            if not waiting:
                logger.info("waiting up to %.0f s for another %s run (%s)", left, name, holder)
                waiting = True
            time.sleep(min(POLL_SECONDS, left))
        yield
    finally:
        lock.release()


def _lock_for(rt: Runtime, name: str) -> _Lock:
    engine = rt.engine
    if engine.dialect.name == "postgresql":
        return _AdvisoryLock(engine, name)
    return _FileLock(lock_file(rt, name), name)


def lock_file(rt: Runtime, name: str) -> Path:
    """``<database file>.<name>.lock`` beside a file database, else in ``SIAMID_HOME``."""
    url = rt.engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        db = Path(url.database).expanduser().resolve()
        return db.with_name(f"{db.name}.{name}.lock")
    return rt.settings.home_dir / f"{name}.lock"


class _FileLock:
    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self._file: IO[str] | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        record = {
            "run": this_run(self.name),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        f.write(json.dumps(record) + "\n")
        f.flush()
        self._file = f
        return True

    def holder(self) -> str:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            return f"{record['run']}, since {record['since']}: {record['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            return f"a process holding {self.path}"

    def release(self) -> None:
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class _AdvisoryLock:
    def __init__(self, engine: Engine, name: str) -> None:
        self.engine, self.name = engine, name
        self.key = {"c": PG_LOCK_CLASS, "o": LOCKS[name]}
        self._conn: Connection | None = None
        self._held = False

    def try_acquire(self) -> bool:
        if self._conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            # application_name (at most 63 bytes) is how waiting runs name this one
            conn.execute(
                text("SELECT set_config('application_name', :n, false)"),
                {"n": this_run(self.name)[:63]},
            )
            self._conn = conn
        self._held = bool(self._conn.scalar(text("SELECT pg_try_advisory_lock(:c, :o)"), self.key))
        return self._held

    def holder(self) -> str:
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT a.pid, a.application_name, a.client_addr, a.backend_start "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
                    "AND l.classid::bigint = :c AND l.objid::bigint = :o"
                ),
                self.key,
            ).first()
        if row is None:
            return "a run that has just finished"
        pid, app, addr, start = row
        where = f" from {addr}" if addr else ""
        since = f", connected since {start:%Y-%m-%d %H:%M:%S %Z}" if start else ""
        return f"{app or 'an unnamed client'}; server pid {pid}{where}{since}"

    def release(self) -> None:
        if self._conn is None:
            return
        if self._held:
            with contextlib.suppress(Exception):  # a lost connection released it already
                self._conn.execute(text("SELECT pg_advisory_unlock(:c, :o)"), self.key)
        # not back to the pool: it carries this run's application_name
        self._conn.invalidate()
        self._conn.close()
        self._conn, self._held = None, False
