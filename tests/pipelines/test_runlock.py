"""Run locks on SQLite (a flock'ed file beside the database) and PostgreSQL (an advisory lock):
a second run waits or stops naming the first, and a killed run never leaves its lock behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.services.runlock import RunLockedError, lock_file, run_lock
from pipelines.services.runtime import Runtime, open_runtime
from pipelines.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SIAMID = Path(sys.executable).with_name("siamid")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def lock_rt(
    request: pytest.FixtureRequest, siamid_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Runtime]:
    if request.param == "postgres":
        monkeypatch.setenv("SIAMID_DATABASE_URL", request.getfixturevalue("postgres_url"))
    rt = open_runtime(Settings())
    yield rt
    rt.engine.dispose()


def test_a_second_run_stops_at_once_naming_the_first(lock_rt: Runtime) -> None:
    with run_lock(lock_rt, "index"):
        with pytest.raises(RunLockedError) as caught:
            with run_lock(lock_rt, "index"):
                pytest.fail("two index runs held the lock")
        message = str(caught.value)
        assert f"siamid index, pid {os.getpid()}" in message and "--wait" in message
    with run_lock(lock_rt, "index"):  # released
        pass


def test_a_second_run_waits_for_the_first(lock_rt: Runtime) -> None:
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with run_lock(lock_rt, "index"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(30)
    threading.Timer(1.0, release.set).start()
    t0 = time.monotonic()
    with run_lock(lock_rt, "index", wait_seconds=30):
        waited = time.monotonic() - t0
    thread.join(30)
    assert 0.8 <= waited < 20
    held.clear()
    release.clear()
    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(30)
    t0 = time.monotonic()
    with pytest.raises(RunLockedError, match="did not finish within 0.6 s"):
        with run_lock(lock_rt, "index", wait_seconds=0.6):
            pass
    assert time.monotonic() - t0 >= 0.6
    release.set()
    thread.join(30)


HOLD = textwrap.dedent("""
    import sys, time
    from pipelines.services.runtime import open_runtime
    from pipelines.settings import Settings
    from pipelines.services.runlock import run_lock

    with run_lock(open_runtime(Settings()), "index"):
        print("held", flush=True)
        time.sleep(300)
""")


def test_a_killed_run_leaves_no_lock_behind(lock_rt: Runtime) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD], env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            with run_lock(lock_rt, "index"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    with run_lock(lock_rt, "index", wait_seconds=10):  # the server / kernel released it
        pass


def test_the_sqlite_lock_file_is_beside_the_database(rt: Runtime) -> None:
    path = lock_file(rt, "index")
    assert path == rt.settings.home_dir / "siamid.db.index.lock"
    with run_lock(rt, "index"):
        assert f"pid {os.getpid()}" in path.read_text()


@pytest.mark.slow
def test_embed_while_another_embed_runs_exits_2_naming_it(rt: Runtime, model: str) -> None:
    """Through the console script: with a model to embed with, the flow takes the lock before
    anything else (an unknown model is refused before Prefect starts)."""
    env = {**os.environ, "SIAMID_TORCH_THREADS": "1"}
    with run_lock(rt, "index"):
        proc = subprocess.run(
            [str(SIAMID), "embed", "--wait", "1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert f"another index run is using this database (siamid index, pid {os.getpid()}" in errors[0]
    assert "within 1 s" in errors[0]
