"""The real thing: `siamid api` in its own process, called over HTTP on 127.0.0.1, while new
index versions are published (by its own jobs and from outside) and an identity is removed."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from bench.common import free_port, siamid_command
from pipelines.services.apikeys import create_api_key
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.identification import Identifier
from pipelines.services.indexing import index_pending
from pipelines.services.runtime import Runtime
from siamese.synthetic import generate_gallery
from tests.api.support import Prepared


@pytest.fixture
def server(home: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "SIAMID_HOME": str(home),
        "SIAMID_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "SIAMID_API_POLL_SECONDS": "0.2",
        "SIAMID_API_ACCESS_LOG": "false",
    }
    env.pop("SIAMID_DATABASE_URL", None)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [*siamid_command(), "api", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log.close()
        # uvicorn shuts down gracefully, then re-raises the signal it caught (exit -15).
        text = (tmp_path / "server.log").read_text()
        assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in text, text


@dataclass
class Seen:
    started: float
    status: int
    version: int | None
    names: set[str] = field(default_factory=set)


class Hammer(threading.Thread):
    """Asks, one request after the other, until stopped: a search and an identify in turn."""

    def __init__(self, base: str, key: str, vector: list[float], photo: bytes) -> None:
        super().__init__(daemon=True)
        self.base, self.headers = base, {"X-API-Key": key}
        self.vector, self.photo = vector, photo
        self.seen: list[Seen] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=30) as c:
            i = 0
            while not self.stop.is_set():
                t = time.monotonic()
                if i % 2:
                    r = c.post("/v1/identify", files={"image": ("p.png", self.photo)})
                    body = r.json()["faces"][0] if r.status_code == 200 else {}
                else:
                    r = c.post("/v1/search", json={"embedding": self.vector})
                    body = r.json() if r.status_code == 200 else {}
                names = {x["identity"] for x in body.get("candidates", [])}
                self.seen.append(Seen(t, r.status_code, body.get("index_version"), names))
                i += 1


def wait_job(c: httpx.Client, job_id: str) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while (job := c.get(f"/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "done", job
    return dict(job)


def test_swaps_under_load_and_a_removal(
    server: str, rt: Runtime, prepared: Prepared, tmp_path: Path
) -> None:
    write = create_api_key(rt.sessions, "write").token
    read = create_api_key(rt.sessions, "read").token
    victim = prepared.gallery / "person_0001" / "002.png"
    vector = Identifier(rt).embed_paths([victim]).vectors[0].tolist()
    hammer = Hammer(server, read, vector, victim.read_bytes())
    generate_gallery(tmp_path / "new", identities=3, per_identity=2, seed=7, first_identity=300)

    with httpx.Client(base_url=server, headers={"X-API-Key": write}, timeout=30) as c:
        first = c.get("/readyz").json()["index_version"]
        hammer.start()
        time.sleep(0.3)
        # 1. a version published by the server's own job (enrolment)
        photos = sorted((tmp_path / "new" / "person_0300").glob("*.png"))
        files = [("images", (p.name, p.read_bytes())) for p in photos]
        enrolled = c.post("/v1/identities/newcomer/images", files=files)
        assert enrolled.status_code == 202, enrolled.text
        second = wait_job(c, enrolled.json()["job"]["id"])["result"]["index_version"]
        time.sleep(0.3)
        # 2. a version published from outside (as `siamid embed` would): found by polling SQL
        (tmp_path / "new" / "person_0300").rename(tmp_path / "person_0300")
        import_items(scan_image_folder(tmp_path / "new"), sessions=rt.sessions)
        third = index_pending(rt, workers=0).index.index_version_id
        deadline = time.monotonic() + 10
        while c.get("/readyz").json()["index_version"] != third:
            assert time.monotonic() < deadline, "the externally published version was not served"
            time.sleep(0.05)
        time.sleep(0.3)
        # 3. a removal: not answered from the moment DELETE returns, then a version without it
        removal = c.delete("/v1/identities/" + quote("person_0001"))
        removed_at = time.monotonic()
        assert removal.status_code == 200, removal.text
        fourth = wait_job(c, removal.json()["job"]["id"])["result"]["index_version"]
        time.sleep(0.5)
        hammer.stop.set()
        hammer.join(30)
        metrics = c.get("/metrics").text

    seen = hammer.seen
    assert len(seen) > 20 and all(s.status == 200 for s in seen), {s.status for s in seen}
    versions = [s.version for s in seen]
    assert versions == sorted(versions), "a request was answered by an older version"  # type: ignore[type-var]
    assert {first, second, third, fourth} <= set(versions)
    assert first < second < third < fourth
    before = [s for s in seen if s.started < removed_at]
    after = [s for s in seen if s.started >= removed_at]
    assert any("person_0001" in s.names for s in before)  # the probe does find the victim
    assert after and not any("person_0001" in s.names for s in after)
    assert 'status="200"' in metrics and 'status="500"' not in metrics
