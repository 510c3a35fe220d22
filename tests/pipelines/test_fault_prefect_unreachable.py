"""Fault: PREFECT_API_URL names a Prefect server that is down (a closed port on 127.0.0.1).

Promised: a flow command stops at once with one ``error:`` line naming PREFECT_API_URL and what
to do, exit 2; no traceback, and no half-minute of Prefect's client retrying first. The command
runs through its entry point in this process (a child process would spend its time importing).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from pipelines.cli import main
from tests.fault_support import free_port

pytestmark = pytest.mark.fault

LIMIT_S = 5.0  # the check waits at most 3 s; a refused connection answers at once


def test_prefect_api_unreachable_is_one_error_line(
    siamid_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    monkeypatch.setattr(sys, "argv", ["siamid", "embed"])
    t0 = time.monotonic()
    with temporary_settings({PREFECT_API_URL: url}), pytest.raises(SystemExit) as exited:
        main()
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    with capsys.disabled():
        print(f"\nFAULT prefect-unreachable: exit {exited.value.code} after {elapsed:.2f} s: {err}")
    assert exited.value.code == 2, err
    assert err.strip().splitlines()[-1].startswith("error: the Prefect API at "), err
    assert f"PREFECT_API_URL={url}" in err and "Traceback" not in err
    assert elapsed < LIMIT_S, elapsed
