"""`siamid serve` registers the embed deployment with its cron on a real Prefect server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.common import free_port


def _wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_serve_registers_cron_deployment_on_a_real_server(tmp_path: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "SIAMID_HOME": str(tmp_path / "siamid"),
    }
    env.pop("PREFECT_API_URL", None)
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    serve = None
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for(healthy, 240, "prefect server start")
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "serve",
                "--cron",
                "15 4 * * *",
                "--name",
                "nightly-test",
            ],
            env={**env, "PREFECT_API_URL": api},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def deployment() -> dict | None:  # type: ignore[type-arg]
            r = httpx.post(f"{api}/deployments/filter", json={}, timeout=5)
            found = [d for d in r.json() if d["name"] == "nightly-test"]
            return found[0] if found else None

        dep = _wait_for(deployment, 180, "the deployment to register")
        crons = [s["schedule"].get("cron") for s in dep["schedules"]]
        assert crons == ["15 4 * * *"]
        flow = httpx.get(f"{api}/flows/{dep['flow_id']}", timeout=5).json()
        assert flow["name"] == "embed"
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)
