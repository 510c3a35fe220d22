"""Fault: PostgreSQL stopped and started again while clients search.

`siamid api` runs in its own process on a PostgreSQL server of this test's own, four clients
search without pause, the server is stopped (fast shutdown: sessions are ended) for two
seconds and started again. Promised: every answer is 200 or 503 (with ``Retry-After``), never a
500 nor a dropped connection, and searches answer 200 again within 5 s of the database's
return, with no restart of the service.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipelines.services.apikeys import create_api_key
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.identification import Identifier
from pipelines.services.indexing import index_pending
from pipelines.services.runtime import open_runtime
from siamese.synthetic import generate_gallery
from tests.api.support import home_settings, quick_model
from tests.fault_support import child_env, free_port, own_postgres, siamid_command, wait_http

OUTAGE_S = 1.5
RECOVERY_LIMIT_S = 5.0


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    retry_after: str | None
    detail: str


class Searcher(threading.Thread):
    def __init__(self, base: str, key: str, vector: list[float]) -> None:
        super().__init__(daemon=True)
        self.base, self.key, self.vector = base, key, vector
        self.answers: list[Answer] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers={"X-API-Key": self.key}, timeout=10) as c:
            while not self.stop.is_set():
                t = time.monotonic()
                try:
                    r = c.post("/v1/search", json={"embedding": self.vector})
                    status, detail = r.status_code, r.text[:300]
                    retry = r.headers.get("Retry-After")
                except httpx.TransportError as exc:
                    status, detail, retry = 0, repr(exc), None
                self.answers.append(Answer(t, time.monotonic(), status, retry, detail))


@pytest.mark.postgres
def test_postgres_stopped_and_started_under_search_load(tmp_path: Path) -> None:
    with own_postgres() as pg:
        generate_gallery(tmp_path / "g", identities=6, per_identity=3, seed=3)
        home = tmp_path / "home"
        rt = open_runtime(home_settings(home, database_url=pg.url))
        import_items(scan_image_folder(tmp_path / "g"), sessions=rt.sessions)
        index_pending(rt, quick_model(rt), workers=0)
        key = create_api_key(rt.sessions, "read").token
        vector = (
            Identifier(rt).embed_paths([tmp_path / "g/person_0002/000.png"]).vectors[0].tolist()
        )
        rt.engine.dispose()

        port = free_port()
        env = child_env(
            SIAMID_HOME=str(home),
            SIAMID_DATABASE_URL=pg.url,
            SIAMID_API_POLL_SECONDS="0.2",
            SIAMID_API_ACCESS_LOG="false",
            SIAMID_API_KEY_CACHE_SECONDS="0",  # every request asks SQL for its key: worst case
        )
        log_path = tmp_path / "server.log"
        log = log_path.open("w")
        proc = subprocess.Popen(
            [*siamid_command(), "api", "--port", str(port)], env=env, stdout=log, stderr=log
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/readyz", proc, log_path)
            clients = [Searcher(base, key, vector) for _ in range(4)]
            for c in clients:
                c.start()
            time.sleep(0.5)
            t_stop = time.monotonic()
            pg.stop()
            time.sleep(OUTAGE_S)
            ready_during = httpx.get(f"{base}/readyz", timeout=10)
            pg.start()
            t_back = time.monotonic()
            while time.monotonic() < t_back + RECOVERY_LIMIT_S and not any(
                a.started >= t_back and a.status == 200 for c in clients for a in c.answers[-20:]
            ):
                time.sleep(0.05)
            time.sleep(0.5)  # and it stays up
            for c in clients:
                c.stop.set()
            for c in clients:
                c.join(15)
            assert proc.poll() is None, log_path.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()

    answers = sorted((a for c in clients for a in c.answers), key=lambda a: a.started)
    by_status: dict[int, int] = {}
    for a in answers:
        by_status[a.status] = by_status.get(a.status, 0) + 1
    other = [a for a in answers if a.status not in (200, 503)]
    unavailable = [a for a in answers if a.status == 503]
    first_ok = next((a for a in answers if a.started >= t_back and a.status == 200), None)
    recovery = None if first_ok is None else first_ok.ended - t_back
    late_503 = [a for a in unavailable if first_ok is not None and a.started > first_ok.ended]
    print(
        f"\nFAULT postgres-restart: requests {len(answers)}, by status {by_status}, "
        f"during outage {sum(1 for a in answers if t_stop <= a.started < t_back)}, "
        f"recovery {recovery if recovery is None else round(recovery, 2)} s after the "
        f"database's return"
    )
    assert not other, [(a.status, a.detail) for a in other[:5]]
    assert all(a.retry_after for a in unavailable), unavailable[:3]
    assert all("database" in a.detail for a in unavailable), unavailable[:3]
    assert ready_during.status_code == 503, ready_during.text
    assert recovery is not None and recovery <= RECOVERY_LIMIT_S, recovery
    assert not late_503, late_503[:3]
    text = log_path.read_text()
    assert "Traceback" not in text, text[-3000:]
