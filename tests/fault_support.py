"""What the fault tests share: a PostgreSQL server of their own (so they may stop it), a small
filesystem they may fill, and the rule for what a machine lacks (skip locally, fail under
``CI=true``: .ci/run runs as root on a machine with PostgreSQL's binaries)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.common import free_port

ON_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Locally a missing tool or privilege skips the test; under CI=true it fails."""
    if ON_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a `siamid` child process: one thread, this checkout first."""
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "SIAMID_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        **extra,
    }
    return env


def pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts)
    return found[-1].parent if found else None


@dataclass
class OwnPostgres:
    """A PostgreSQL server in a temporary folder on a free loopback port, stopped at the end."""

    bin: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://siamid@127.0.0.1:{self.port}/postgres"

    def _as_pg(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, cmd, stderr=done.stderr)

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data.parent} -c fsync=off"
        log = str(self.data.parent / "server.log")
        self._as_pg(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", opts, "start"
        )

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, as a restart by an operator does."""
        self._as_pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """Its folder is a fresh one under /tmp: pytest's are private to root, and the server runs
    as the ``postgres`` user when the tests run as root (as on CI)."""
    binaries = pg_bin()
    if binaries is None:
        skip_or_fail("PostgreSQL's binaries are not under /usr/lib/postgresql/*/bin")
        raise AssertionError  # not reached
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            skip_or_fail("running as root, the server needs a `postgres` user (.ci/run adds it)")
    folder = Path(tempfile.mkdtemp(prefix="siamid-fault-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    pg = OwnPostgres(binaries, folder / "data", free_port())
    try:
        pg._as_pg("initdb", "-D", str(pg.data), "-A", "trust", "-U", "siamid", "-E", "UTF8", "-N")
        pg.start()
        try:
            yield pg
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                pg.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def small_filesystem(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "16m") at ``mountpoint``: its own ENOSPC only."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a size-limited tmpfs needs root")
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        skip_or_fail(f"cannot mount a tmpfs at {mountpoint}: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Write a filler file in ``folder`` until its filesystem has ``leave_bytes`` or less free."""
    filler = folder / "filler"
    st = os.statvfs(folder)
    room = max(0, st.f_bavail * st.f_frsize - leave_bytes)
    block = b"\0" * (1 << 20)
    with open(filler, "ab") as f:
        try:
            while room > 0:
                room -= f.write(block[: min(room, len(block))])
            f.flush()
        except OSError:
            pass  # full already: that is what was asked
    return filler


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    """Until ``url`` answers 200 (the server is ready), or fail with the server's log."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
