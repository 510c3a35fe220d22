"""Faults of `siamid api` in its own process on a PostgreSQL server of the tests' own (so they
may stop it), called over HTTP on 127.0.0.1 by clients that never pause. One server serves
both tests, in this order (starting one costs seconds on a 2-core machine):

1. PostgreSQL stopped (fast shutdown: sessions are ended) for ``OUTAGE_S`` and started again
   under search load. Promised: every answer is 200 or 503 (with ``Retry-After`` and a reason
   naming the database), never a 500 nor a dropped connection; ``/readyz`` says 503 meanwhile;
   searches answer 200 again within ``RECOVERY_LIMIT_S`` of the database's return, with no
   restart of the service.
2. SIGTERM under identify load. Promised: the server stops accepting, finishes every request
   sent before the signal (200, none dropped), runs its shutdown and exits. A request sent after
   the signal may be refused (the server no longer listens): a client told to go elsewhere, not
   a request lost. uvicorn's graceful shutdown drains; ``siamid api`` gives it 30 s.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.common import free_port, siamid_command
from pipelines.services.apikeys import create_api_key
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.identification import Identifier
from pipelines.services.indexing import index_pending
from pipelines.services.runtime import open_runtime
from siamese.synthetic import generate_gallery
from tests.api.support import home_settings, quick_model
from tests.fault_support import (
    OwnPostgres,
    child_env,
    own_postgres,
    wait_http,
)

pytestmark = pytest.mark.fault

OUTAGE_S = 1.5
RECOVERY_LIMIT_S = 5.0


@dataclass
class Service:
    pg: OwnPostgres
    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    key: str
    vector: list[float]
    photo: bytes
    setup: str  # where the set-up time went, for the figures


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("fault-service")
    t0 = time.monotonic()
    with own_postgres() as pg:
        t_pg = time.monotonic()
        generate_gallery(tmp / "g", identities=6, per_identity=3, seed=3)
        home = tmp / "home"
        rt = open_runtime(home_settings(home, database_url=pg.url))
        import_items(scan_image_folder(tmp / "g"), sessions=rt.sessions)
        index_pending(rt, quick_model(rt), workers=0)
        key = create_api_key(rt.sessions, "read").token
        probe = tmp / "g/person_0002/000.png"
        vector = Identifier(rt).embed_paths([probe]).vectors[0].tolist()
        rt.engine.dispose()
        t_model = time.monotonic()
        env = child_env(
            SIAMID_HOME=str(home),
            SIAMID_DATABASE_URL=pg.url,
            SIAMID_API_POLL_SECONDS="0.2",
            SIAMID_API_ACCESS_LOG="false",
            SIAMID_API_KEY_CACHE_SECONDS="0",  # every request asks SQL for its key: worst case
        )
        port = free_port()
        log_path = tmp / "server.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [*siamid_command(), "api", "--port", str(port)], env=env, stdout=log, stderr=log
            )
            try:
                wait_http(f"http://127.0.0.1:{port}/readyz", proc, log_path)
                setup = (
                    f"PostgreSQL {t_pg - t0:.1f} s, model and index {t_model - t_pg:.1f} s, "
                    f"service ready {time.monotonic() - t_model:.1f} s"
                )
                yield Service(
                    pg,
                    proc,
                    f"http://127.0.0.1:{port}",
                    log_path,
                    key,
                    vector,
                    probe.read_bytes(),
                    setup,
                )
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    retry_after: str | None
    detail: str


class Client(threading.Thread):
    """Sends ``ask(client)`` one after the other until stopped or no longer let in."""

    def __init__(self, s: Service, ask: Callable[[httpx.Client], httpx.Response]) -> None:
        super().__init__(daemon=True)
        self.s, self.ask = s, ask
        self.answers: list[Answer] = []
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"X-API-Key": self.s.key}
        with httpx.Client(base_url=self.s.base, headers=headers, timeout=30) as c:
            while not self.stop.is_set():
                t = time.monotonic()
                try:
                    r = self.ask(c)
                    status, detail = r.status_code, r.text[:300]
                    retry = r.headers.get("Retry-After")
                except httpx.TransportError as exc:
                    status, detail, retry = 0, repr(exc), None
                self.answers.append(Answer(t, time.monotonic(), status, retry, detail))
                if status == 0 and "ConnectError" in detail:
                    return  # the server no longer listens


def start(clients: list[Client]) -> list[Client]:
    for c in clients:
        c.start()
    return clients


def test_postgres_stopped_and_started_under_search_load(service: Service) -> None:
    clients = start(
        [
            Client(service, lambda c: c.post("/v1/search", json={"embedding": service.vector}))
            for _ in range(4)
        ]
    )
    time.sleep(0.5)
    t_stop = time.monotonic()
    service.pg.stop()
    time.sleep(OUTAGE_S)
    ready_during = httpx.get(f"{service.base}/readyz", timeout=10)
    service.pg.start()
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
    assert service.proc.poll() is None, service.log.read_text()

    answers = sorted((a for c in clients for a in c.answers), key=lambda a: a.started)
    by_status: dict[int, int] = {}
    for a in answers:
        by_status[a.status] = by_status.get(a.status, 0) + 1
    other = [a for a in answers if a.status not in (200, 503)]
    unavailable = [a for a in answers if a.status == 503]
    first_ok = next((a for a in answers if a.started >= t_back and a.status == 200), None)
    recovery = None if first_ok is None else first_ok.ended - t_back
    late_503 = [a for a in unavailable if first_ok is not None and a.started > first_ok.ended]
    during = sum(1 for a in answers if t_stop <= a.started < t_back)
    print(
        f"\nFAULT postgres-restart: requests {len(answers)}, by status {by_status}, "
        f"during the {OUTAGE_S} s outage {during}, "
        f"recovery {recovery if recovery is None else round(recovery, 2)} s after the "
        f"database's return (set-up: {service.setup})"
    )
    assert not other, [(a.status, a.detail) for a in other[:5]]
    assert all(a.retry_after for a in unavailable), unavailable[:3]
    assert all("database" in a.detail for a in unavailable), unavailable[:3]
    assert ready_during.status_code == 503, ready_during.text
    assert recovery is not None and recovery <= RECOVERY_LIMIT_S, recovery
    assert not late_503, late_503[:3]
    assert "Traceback" not in service.log.read_text(), service.log.read_text()[-3000:]


def test_sigterm_to_the_api_under_load_drains(service: Service) -> None:
    """Runs last: it ends the module's server."""
    photo = service.photo
    clients = start(
        [
            Client(service, lambda c: c.post("/v1/identify", files={"image": ("p.png", photo)}))
            for _ in range(8)
        ]
    )
    time.sleep(1.0)
    t_signal = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    code = service.proc.wait(30)
    t_exit = time.monotonic()
    for c in clients:
        c.stop.set()
    for c in clients:
        c.join(10)

    sent = [a for c in clients for a in c.answers]
    begun = [a for a in sent if a.started < t_signal]
    in_flight = [a for a in begun if a.ended > t_signal]
    failed = [a for a in begun if a.status != 200]
    late = [a for a in sent if a.started >= t_signal]
    refused = [a for a in late if "ConnectError" in a.detail]
    print(
        f"\nFAULT sigterm: requests {len(sent)}, sent before the signal {len(begun)}, "
        f"in flight at the signal {len(in_flight)}, failed of those sent before {len(failed)}, "
        f"sent after the signal {len(late)} (answered {sum(1 for a in late if a.status == 200)}"
        f", refused {len(refused)}), exit {t_exit - t_signal:.2f} s after the signal"
    )
    text = service.log.read_text()
    assert not failed, [(a.status, a.detail) for a in failed[:5]]
    assert len(in_flight) >= 2, "the test needs requests in flight at the signal"
    assert code in (0, -signal.SIGTERM), (code, text[-3000:])
    assert "Application shutdown complete" in text and "Traceback" not in text, text[-3000:]
