"""Fault: SIGTERM to a process running `siamid embed`, in the middle of its chunks.

`siamid embed` runs through its entry point in this process (the flow's body in the main
thread, as in the real command); a thread sends this process SIGTERM once the first chunk's
vectors are on disk. Promised: the chunk in progress finishes, the run stops before the next
one with an ``error:`` line saying how far it got, exit 2; what it committed stays, nothing is
published half-way, and the next run finishes the work.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from pipelines.cli import main
from pipelines.services.runtime import Runtime
from storage.indexes import published_index
from storage.models import Embedding

pytestmark = pytest.mark.fault

CHUNK = 2


def embed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["siamid", "embed", "--chunk-size", str(CHUNK)])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0), capsys.readouterr().err


def embedded(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.count()).select_from(Embedding)) or 0


def test_sigterm_stops_embed_between_chunks(
    prefect_harness: None,
    rt: Runtime,
    model: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vectors = rt.settings.vectors_dir

    def terminate_after_first_shard() -> None:
        deadline = time.monotonic() + 120
        while not any(vectors.rglob("shard-*.f32.npy")) and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    stray: list[int] = []  # a SIGTERM that came when no run was listening: never pytest's end
    before = signal.signal(signal.SIGTERM, lambda signum, frame: stray.append(signum))
    try:
        killer = threading.Thread(target=terminate_after_first_shard, daemon=True)
        killer.start()
        code, err = embed(monkeypatch, capsys)
        killer.join(5)
        net = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    done = embedded(rt)
    with capsys.disabled():
        line = next((x for x in err.splitlines() if x.startswith("error:")), "")
        print(f"\nFAULT sigterm-embed: exit {code}, {done} of 32 images committed: {line}")
    assert code == 2, err
    assert "error: stopped on SIGTERM after chunk " in err and "Traceback" not in err, err
    assert 0 < done < 32 and done % CHUNK == 0, done  # whole chunks, no partial one
    with rt.sessions() as s:
        assert published_index(session=s) is None  # nothing published half-way
    assert not stray, "SIGTERM came after the run stopped listening"
    assert net is not None and net.__name__ == "<lambda>"  # the run put the handlers back

    code, err = embed(monkeypatch, capsys)
    assert code == 0, err
    assert embedded(rt) == 32
    with rt.sessions() as s:
        row = published_index(session=s)
        assert row is not None and row.vector_count == 32
