"""``--verbose`` keeps its promise (Prefect's own logs), and importing siamid changes nothing.

Each check runs in a fresh interpreter: what Prefect makes of its settings is fixed when it is
first imported, and a test process has imported it long before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

VERBOSE = """
import logging, sys
from typer.testing import CliRunner
from pipelines.cli import app
args = (["--verbose"] if sys.argv[1] == "1" else []) + ["db", "upgrade"]
result = CliRunner().invoke(app, args)
assert result.exit_code == 0, result.output
from prefect import flow  # noqa: F401  (as a command does, after the global options)
print(logging.getLevelName(logging.getLogger("prefect.flow_runs").getEffectiveLevel()))
"""

IMPORTS = """
import json, logging, os
before = dict(os.environ)
handlers = {n: list(logging.getLogger(n).filters) for n in ("distributed.nanny",)}
import pipelines, pipelines.cli, pipelines.cluster, pipelines.settings
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
filters = {n: len(logging.getLogger(n).filters) - len(f) for n, f in handlers.items()}
print(json.dumps({"changed": changed, "filters": filters}))
"""


def _run(code: str, *args: str, home: Path) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_LOGGING", "DASK_LOGGING")) and k != "DO_NOT_TRACK"
    }
    env["SIAMID_HOME"] = str(home)
    env.pop("SIAMID_DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(("flag", "level"), [("1", "INFO"), ("0", "WARNING")])
def test_verbose_turns_prefects_own_logs_on(tmp_path: Path, flag: str, level: str) -> None:
    assert _run(VERBOSE, flag, home=tmp_path / "home") == level


def test_importing_siamid_changes_no_environment_and_no_logging(tmp_path: Path) -> None:
    seen = json.loads(_run(IMPORTS, home=tmp_path / "home"))
    assert seen == {"changed": [], "filters": {"distributed.nanny": 0}}
