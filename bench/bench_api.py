"""HTTP API benchmark: a real ``siamid api`` process on 127.0.0.1 under a keep-alive load.

Set-up, not timed: a throwaway SIAMID_HOME with a small synthetic photo gallery and a quickly
trained one-member model (``bench.common.prepare_gallery``; its weights do not matter for
speed); the photos embedded; ``--vectors`` synthetic face-like unit vectors of the model's
dimension (``bench.common.face_embeddings``, 10 per identity) registered in SQL the way
``bench_identify.py`` does (identities, face images) plus their ``embedding`` rows and vector
store shards, so that the server's own jobs and ``siamid embed`` can publish incremental
versions of the index; one index over everything (``choose_factory``: IVF at 1M, trained on
``--train-points`` vectors) published with the publishing service.

Then ``siamid api`` is started as a separate process (``--workers`` uvicorn workers, torch at
``--threads`` threads, one faiss thread per request) and measured:

0. floors: the index alone in this process (one faiss thread; microseconds per probe one at a
   time and 8 at a time), and ``GET /healthz`` (the HTTP stack and the client alone);
1. in process, for reference: ``Identifier.identify`` of the probe photo (embed + search +
   SQL + decision) and ``Identifier.search`` + ``decide`` of a probe vector, as the command
   line does them; the API's goal is an identify p50 within 1.3x of the in-process one;
2. ``POST /v1/search`` (a probe vector as JSON) and ``POST /v1/identify`` (the photo as
   multipart, a ``--photo-size`` square) at each ``--concurrency`` for ``--duration``
   seconds: p50/p95/p99, req/s, the server's CPU time per request (``/proc``) and its mean
   batch. ``--client threads`` (default): one kept-alive ``http.client`` connection per
   thread; ``--client async``: httpx's async client (several times the client's own cost).
   With ``--baseline REV`` a server of that git revision runs beside this one on the same
   home and every phase is measured on both, in turns (``--no-batching``: this code with
   ``SIAMID_API_BATCH_MAX=1``), and the ratios new / baseline are printed;
3. a swap run: ``/v1/search`` at ``--swap-concurrency`` while three index versions are
   published, each removing an identity that a share of the probes target: (a) ``DELETE
   /v1/identities/{name}`` (the server's job publishes), (b) a removal and publish from this
   process (as ``siamid embed`` would; the server finds it by polling SQL), (c) another
   ``DELETE``. Counted: failed requests, and answers naming an identity after its removal
   committed (for the removal by another process: one poll after it, when the service
   learns of it); both must be zero. Only the first (new) server runs it.

    python bench/bench_api.py --vectors 20000 --threads 1 --concurrency 1,8 --baseline main
    python bench/bench_api.py --vectors 1000000 --threads 1
    python bench/bench_api.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Column,
    FaceEmbeddings,
    base_parser,
    face_embeddings,
    faiss_threads,
    format_table,
    free_port,
    percentiles,
    prepare_gallery,
    print_header,
    siamid_command,
    start_record,
    write_result,
)

NAME = "bench_api"
INSERT_CHUNK = 50_000
SHARD_ROWS = 100_000
#: Synthetic identities whose removal the swap run publishes, and the share of its probes
#: aimed at them.
VICTIMS = (1, 2, 3)
VICTIM_SHARE = 0.5
#: The server's SQL poll (new index versions, removals made by other processes).
POLL_SECONDS = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = base_parser(__doc__ or NAME)
    p.add_argument("--vectors", type=int, default=1_000_000, help="gallery vectors (default 1M)")
    p.add_argument("--per-identity", type=int, default=10, help="vectors per identity")
    p.add_argument("--spread", type=float, default=0.6, help="within-identity noise")
    p.add_argument("--kind", default="auto", help="index kind for choose_factory (default auto)")
    p.add_argument("--nprobe", type=int, default=None, help="IVF nprobe stored in the index")
    p.add_argument(
        "--train-points",
        type=int,
        default=200_000,
        help="vectors the IVF quantizer is trained on (default 200,000; set-up time only)",
    )
    p.add_argument("--concurrency", default="1,8,32", help="client concurrencies (default 1,8,32)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    p.add_argument("--swap-concurrency", type=int, default=8, help="concurrency of the swap run")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--probes", type=int, default=1000, help="distinct probe vectors")
    p.add_argument("--inprocess", type=int, default=200, help="in-process identify samples")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    p.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="a git revision (e.g. main) whose server runs beside this one on the same home: "
        "every load phase is measured on both, in turns, so before/after share the machine's "
        "load (default: this code only)",
    )
    p.add_argument(
        "--no-batching",
        action="store_true",
        help="this code with dynamic batching off (SIAMID_API_BATCH_MAX=1) as the baseline "
        "instead of --baseline",
    )
    p.add_argument(
        "--client",
        choices=("threads", "async"),
        default="threads",
        help="load generator: one keep-alive http.client connection per thread (default; "
        "the lighter client) or httpx's async client",
    )
    p.add_argument(
        "--photo-size", type=int, default=250, help="side of the square probe photo (pixels)"
    )
    p.add_argument(
        "--template",
        choices=("best", "mean"),
        default=None,
        help="the served model's template (default: the small model's own, best); mean "
        "re-scores each candidate identity by its mean template, as dlib-resnet does",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.vectors, args.duration, args.concurrency = 3000, 1.0, "1,4"
        args.swap_concurrency, args.probes, args.inprocess = 4, 100, 10
    if args.baseline and args.no_batching:
        p.error("give --baseline REV or --no-batching, not both")
    args.concurrencies = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    return args


# ------------------------------------------------------------------ set-up


@dataclass
class Gallery:
    rt: Any  # pipelines.services.runtime.Runtime
    model: Any  # pipelines.services.models.ModelRef
    photo: Path
    data: FaceEmbeddings
    index: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def name(identity: int) -> str:
        """The identity name of synthetic identity ``identity`` (row // per_identity)."""
        return f"synthetic_{identity:07d}"


def _max_id(rt: Any, table: Any) -> int:
    from sqlalchemy import func, select

    with rt.sessions() as s:
        return int(s.scalar(select(func.max(table.id))) or 0)


def register_vectors(rt: Any, model: Any, data: FaceEmbeddings) -> None:
    """Identities, face images, vector store shards and embedding rows for the synthetic
    vectors, numbered after the rows already there (the photo gallery's)."""
    from sqlalchemy import insert

    from index.vector_store import VectorStore
    from storage.models import Embedding, FaceImage, Identity

    first_id, first_identity = _max_id(rt, FaceImage) + 1, _max_id(rt, Identity) + 1
    now = datetime.now(UTC)
    per = data.per_identity
    identities = data.centers.shape[0]
    store = VectorStore(rt.settings.vector_store_dir(model.id), model.dim)
    with rt.engine.begin() as conn:
        for start in range(0, identities, INSERT_CHUNK):
            conn.execute(
                insert(Identity),
                [
                    {
                        "id": first_identity + i,
                        "name": Gallery.name(i),
                        "attributes": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(start, min(identities, start + INSERT_CHUNK))
                ],
            )
        for start in range(0, data.n, SHARD_ROWS):
            rows = np.arange(start, min(data.n, start + SHARD_ROWS))
            ids = rows.astype(np.int64) + first_id
            refs = store.write_shard(ids, data.vectors[rows])
            for lo in range(0, len(rows), INSERT_CHUNK):
                part = rows[lo : lo + INSERT_CHUNK]
                conn.execute(
                    insert(FaceImage),
                    [
                        {
                            "id": int(r) + first_id,
                            "identity_id": first_identity + int(r) // per,
                            "source_uri": f"/synthetic/{int(r) // per:07d}/{int(r) % per:03d}.png",
                            "sha256": f"{int(r) + first_id:064x}",
                            "width": 92,
                            "height": 112,
                            "mode": "L",
                            "status": "accepted",
                            "reject_reason": None,
                            "reject_detail": None,
                            "imported_at": now,
                        }
                        for r in part
                    ],
                )
                conn.execute(
                    insert(Embedding),
                    [
                        {
                            "face_image_id": int(r) + first_id,
                            "model_version_id": model.id,
                            "vector_ref": refs[int(r) - start],
                            "created_at": now,
                        }
                        for r in part
                    ],
                )


def build_and_publish_all(rt: Any, model: Any, data: FaceEmbeddings, args: Any) -> dict[str, Any]:
    """One index over every live vector (photos and synthetic), its quantizer trained on a
    sample, published with the publishing service (as the embed flow publishes)."""
    from index.factory import choose_factory
    from index.vector_index import VectorIndex
    from index.vector_store import VectorStore
    from pipelines.services.publishing import BuiltIndex, plan_index, publish

    t0 = time.perf_counter()
    plan = plan_index(rt, model)
    factory = choose_factory(int(plan.live_ids.size), model.dim, args.kind, model.distance)
    index = VectorIndex.create(factory, model.dim, model.distance, nprobe=args.nprobe)
    if not index.is_trained:
        index.train(data.vectors, max_points=args.train_points, seed=args.seed)
    store = VectorStore(rt.settings.vector_store_dir(model.id), model.dim)
    for lo in range(0, plan.live_ids.size, SHARD_ROWS):
        ids = plan.live_ids[lo : lo + SHARD_ROWS]
        index.add(store.read([plan.refs[int(i)] for i in ids]), ids)
    built = BuiltIndex(index, int(plan.live_ids.size), 0, True, True)
    result = publish(rt, plan, built)
    return {
        "factory": index.factory,
        "info": index.info(),
        "vectors": result.vectors,
        "index_version": result.index_version_id,
        "build_seconds": time.perf_counter() - t0,
    }


def prepare(args: argparse.Namespace, workdir: Path) -> Gallery:
    from pipelines.services import embedding
    from pipelines.services.models import resolve_model

    env = prepare_gallery(
        workdir,
        identities=4,
        per_identity=4,
        seed=args.seed,
        train_people=4,
        members=1,
        template=args.template,
    )
    rt = env.rt
    model = resolve_model(rt.sessions, env.model_name)
    for items in embedding.chunks(embedding.pending_images(rt, model).todo, 256):
        embedding.embed_chunk(rt, model, items, workers=0)
    data = face_embeddings(
        args.vectors,
        dim=model.dim,
        per_identity=args.per_identity,
        spread=args.spread,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    register_vectors(rt, model, data)
    print(
        f"registered {data.n:,} vectors in SQL and the vector store in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    photo = sorted(env.root.rglob("*.png"))[0]
    gallery = Gallery(rt, model, photo, data)
    gallery.index = build_and_publish_all(rt, model, data, args)
    print(
        f"index {gallery.index['factory']} over {gallery.index['vectors']:,} vectors built "
        f"and published in {gallery.index['build_seconds']:.1f} s",
        flush=True,
    )
    return gallery


def probe_vectors(data: FaceEmbeddings, identities: np.ndarray, seed: int) -> np.ndarray:
    """New images (mated probes) of the given identities: centre + noise, unit length."""
    rng = np.random.default_rng([seed, 11])
    centers = data.centers[identities]
    noise = rng.standard_normal(centers.shape).astype(np.float32)
    noise *= np.float32(data.spread / math.sqrt(data.dim))
    out = centers + noise
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------ the server process


@dataclass
class Server:
    label: str
    base: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def baseline_code(rev: str, dest: Path) -> Path:
    """The repository's files at ``rev`` (``git archive``), for a server of that code."""
    repo = Path(__file__).resolve().parents[1]
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


@contextlib.contextmanager
def api_server(
    rt: Any,
    args: argparse.Namespace,
    log: Path,
    *,
    label: str = "new",
    code: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """``siamid api`` on a free port of 127.0.0.1 over the bench's home (of the code under
    ``code`` when given, e.g. :func:`baseline_code`)."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        **({"PYTHONPATH": str(code)} if code is not None else {}),
        **(extra_env or {}),
        "SIAMID_HOME": str(rt.settings.home_dir),
        "SIAMID_DATABASE_URL": rt.settings.db_url,
        "SIAMID_TORCH_THREADS": str(args.threads),
        "OMP_NUM_THREADS": str(args.threads),
        "SIAMID_API_SEARCH_THREADS": "1",
        "SIAMID_API_ACCESS_LOG": "false",
        "SIAMID_API_POLL_SECONDS": str(POLL_SECONDS),
    }
    cli = [sys.executable, "-c", "from pipelines.cli import main; main()"]
    cmd = [*(cli if code is not None else siamid_command()), "api", "--port", str(port)]
    cmd += ["--workers", str(args.workers)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=code or None
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server is not ready:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
            yield Server(label, base, proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ------------------------------------------------------------------ load generation


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


Requests = Callable[[int], Req]


def load(
    base: str, key: str, requests: Requests, concurrency: int, duration: float, client: str
) -> dict[str, Any]:
    """``concurrency`` clients sending back to back for ``duration`` s: latencies of the
    answered requests (200), the count of the others, and req/s."""
    if client == "async":
        return asyncio.run(load_async(base, key, requests, concurrency, duration))
    return load_threads(base, key, requests, concurrency, duration)


def load_threads(
    base: str, key: str, requests: Requests, concurrency: int, duration: float
) -> dict[str, Any]:
    """One thread per client, each with its own kept-alive ``http.client`` connection: the
    cheapest client Python has (no event loop, no per-request objects beyond the response)."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(base)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failed = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    stop_at = [math.inf]

    def send(conn: http.client.HTTPConnection, i: int) -> bool:
        r = requests(i)
        conn.request(r.method, r.path, body=r.body, headers={"X-API-Key": key, **r.headers})
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200

    def worker(w: int) -> None:
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)
        for i in range(min(10, 2 * concurrency)):  # warm-up: the connection, caches
            send(conn, w + i * concurrency)
        start.wait()
        i = w
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                ok = send(conn, i)
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
            if ok:
                latencies[w].append(time.perf_counter() - t0)
            else:
                failed[w] += 1
            i += concurrency
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    every = [x for per in latencies for x in per]
    return {
        **percentiles(every),
        "requests": len(every),
        "failed": sum(failed),
        "rps": len(every) / elapsed,
        "seconds": elapsed,
    }


async def load_async(
    base: str, key: str, requests: Requests, concurrency: int, duration: float
) -> dict[str, Any]:
    """:func:`load` with httpx's async client (its own cost is several times the threads')."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, timeout=120, limits=limits
    ) as client:

        async def send(i: int) -> Any:
            r = requests(i)
            return await client.request(r.method, r.path, content=r.body, headers=r.headers)

        for i in range(min(20, 2 * concurrency)):  # warm-up: connections, caches
            await send(i)
        latencies: list[float] = []
        failed = 0
        stop_at = time.perf_counter() + duration

        async def worker(w: int) -> None:
            nonlocal failed
            i = w
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    ok = (await send(i)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failed += 1
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        **percentiles(latencies),
        "requests": len(latencies),
        "failed": failed,
        "rps": len(latencies) / elapsed,
        "seconds": elapsed,
    }


def measure(
    server: Server,
    key: str,
    endpoint: str,
    requests: Requests,
    concurrency: int,
    duration: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One load phase on one server: the client's figures, the server's own mean time per
    request, and the server process's CPU time per answered request."""
    before, cpu0 = server_seconds(server.base, endpoint), cpu_seconds(server.pid)
    batches0 = server_batches(server.base)
    res = load(server.base, key, requests, concurrency, duration, args.client)
    cpu1, after = cpu_seconds(server.pid), server_seconds(server.base, endpoint)
    batches1 = server_batches(server.base)
    served = after[1] - before[1]
    res["server_mean"] = 1e3 * (after[0] - before[0]) / served if served else None
    res["server_cpu_ms"] = 1e3 * (cpu1 - cpu0) / res["requests"] if res["requests"] else None
    kind = {"/v1/search": "search", "/v1/identify": "embed"}.get(endpoint)
    if kind and kind in batches1:
        n = batches1[kind][0] - batches0.get(kind, (0.0, 0.0))[0]
        items = batches1[kind][1] - batches0.get(kind, (0.0, 0.0))[1]
        res["mean_batch"] = items / n if n else None
    row = {"server": server.label, "endpoint": endpoint, "concurrency": concurrency, **res}
    print(
        f"{server.label:>16} {endpoint} c={concurrency}: p50 {res['p50']:.2f} ms, "
        f"{res['rps']:.0f} req/s, server CPU {row['server_cpu_ms'] or 0:.2f} ms/req, "
        f"{res['failed']} failed",
        flush=True,
    )
    return row


def server_batches(base: str) -> dict[str, tuple[float, float]]:
    """kind -> (batches, items) from the server's metrics (absent in servers without them)."""
    import httpx

    out: dict[str, list[float]] = {}
    for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
        for metric, at in (("siamid_api_batches_total{", 0), ("siamid_api_batch_items_total{", 1)):
            if line.startswith(metric):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                out.setdefault(kind, [0.0, 0.0])[at] = float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def server_seconds(base: str, route: str) -> tuple[float, float]:
    """(sum of seconds, count) the server's own histogram holds for ``route`` (all methods)."""
    import httpx

    text = httpx.get(f"{base}/metrics", timeout=30).text
    total = count = 0.0
    for line in text.splitlines():
        if f'route="{route}"' not in line:
            continue
        if line.startswith("siamid_api_request_seconds_sum{"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("siamid_api_request_seconds_count{"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def health_requests() -> Requests:
    def req(i: int) -> Req:
        return Req("GET", "/healthz")

    return req


def search_requests(bodies: list[bytes]) -> Requests:
    headers = {"Content-Type": "application/json"}

    def req(i: int) -> Req:
        return Req("POST", "/v1/search", bodies[i % len(bodies)], headers)

    return req


def identify_requests(photo: bytes) -> Requests:
    """The photo as multipart, encoded once (every request sends the same bytes)."""
    import httpx

    built = httpx.Request("POST", "http://x/", files={"image": ("probe.png", photo)})
    body = built.read()
    headers = {"Content-Type": built.headers["Content-Type"]}

    def req(i: int) -> Req:
        return Req("POST", "/v1/identify", body, headers)

    return req


def square_photo(photo: Path, side: int) -> bytes:
    """The probe photo resized to ``side`` x ``side`` pixels, as PNG bytes."""
    import io

    from PIL import Image

    with Image.open(photo) as img:
        out = io.BytesIO()
        img.resize((side, side), Image.Resampling.BILINEAR).save(out, format="PNG")
    return out.getvalue()


def answer_serialization(n: int, rounds: int = 7) -> dict[str, float]:
    """Microseconds to turn one decision (5 candidates) into the response body, in this
    process: the route's way (the response model from the decision's attributes, FastAPI's
    pydantic ``dump_json``) against ``ORJSONResponse`` (the same model, FastAPI's dict path,
    orjson). Medians of ``rounds`` alternating runs of ``n``."""
    import statistics

    from fastapi.responses import ORJSONResponse, Response
    from fastapi.routing import serialize_response
    from fastapi.utils import create_model_field

    from pipelines.api.schemas import Answer
    from pipelines.services.identification import Candidate, Decision

    d = Decision(
        "embedding",
        "match",
        "synthetic_0000012",
        0.41,
        0.6,
        "calibrated@fpir=0.01",
        "m",
        3,
        [Candidate(f"synthetic_{i:07d}", 0.4 + i / 10, i, i * 10) for i in range(5)],
    )
    answer = create_model_field(name="Response_search", type_=Answer, mode="serialization")

    async def pydantic_json() -> Response:
        body = await serialize_response(
            field=answer,
            response_content=Answer.model_validate(d),
            is_coroutine=True,
            dump_json=True,
        )
        return Response(content=body, media_type="application/json")

    async def orjson() -> Response:
        content = await serialize_response(
            field=answer, response_content=Answer.model_validate(d), is_coroutine=True
        )
        return ORJSONResponse(content)

    async def timed(fn: Callable[[], Awaitable[Response]]) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        return 1e6 * (time.perf_counter() - t0) / n

    runs: dict[str, list[float]] = {"pydantic_dump_json": [], "orjson_response": []}
    loop = asyncio.new_event_loop()
    # FastAPI deprecates ORJSONResponse, for the reason this measures.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            assert (
                loop.run_until_complete(pydantic_json()).body
                == loop.run_until_complete(orjson()).body
            )
            for r in range(rounds):
                pair = [("pydantic_dump_json", pydantic_json), ("orjson_response", orjson)]
                for name, fn in pair if r % 2 == 0 else pair[::-1]:
                    runs[name].append(loop.run_until_complete(timed(fn)))
        finally:
            loop.close()
    return {f"{name}_us": statistics.median(v) for name, v in runs.items()}


def faiss_floor(g: Gallery, probes: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    """The index alone, in this process, one faiss thread: microseconds per probe vector when
    searched one at a time and ``batch`` at a time, at the service's search depth (with the
    service's BLAS threshold)."""
    from index.vector_index import VectorIndex, batch_searches_through_blas
    from pipelines.services.identification import Identifier

    ident = Identifier(g.rt)
    index: VectorIndex = ident.index
    k = min(ident.search_k, index.ntotal)
    out: dict[str, Any] = {"k": k}
    previous = batch_searches_through_blas()
    with faiss_threads(1):
        for size in (1, batch):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                lo = (n * size) % max(len(probes) - size, 1)
                index.search(probes[lo : lo + size], k)
                n += 1
            out[f"us_per_probe_batch{size}"] = 1e6 * (time.perf_counter() - t0) / (n * size)
    batch_searches_through_blas(previous)
    return out


# ------------------------------------------------------------------ the swap run


@dataclass
class Answer:
    started: float
    seconds: float
    ok: bool
    version: int | None
    names: set[str]


async def swap_run(base: str, key: str, g: Gallery, args: argparse.Namespace) -> dict[str, Any]:
    """Search under load while three versions are published, each removing a victim."""
    import httpx

    from pipelines.services.enrolment import remove_identity
    from pipelines.services.indexing import index_lock
    from pipelines.services.publishing import build_and_publish

    victims = [g.name(v) for v in VICTIMS]
    rng = np.random.default_rng([args.seed, 13])
    n = max(args.probes, 60)
    aimed = rng.random(n) < VICTIM_SHARE
    who = np.where(
        aimed,
        rng.choice(VICTIMS, size=n),
        rng.integers(len(VICTIMS) + 1, g.data.centers.shape[0], size=n),
    )
    bodies = [
        json.dumps({"embedding": v.tolist()}).encode()
        for v in probe_vectors(g.data, who, args.seed + 1)
    ]
    removed_at: dict[str, float] = {}
    #: How long after its removal an identity may still be answered: the service applies a
    #: removal through its API at once, one made by another process at its next poll.
    allowed: dict[str, float] = {}
    answers: list[Answer] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=args.swap_concurrency + 4)
    headers = {"X-API-Key": key}

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as c:

        async def worker(w: int) -> None:
            i = w
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = await c.post(
                        "/v1/search",
                        content=bodies[i % n],
                        headers={"Content-Type": "application/json"},
                    )
                    ok = r.status_code == 200
                    body = r.json() if ok else {}
                except httpx.HTTPError:
                    ok, body = False, {}
                names = {x["identity"] for x in body.get("candidates", [])}
                seconds = time.perf_counter() - t0
                answers.append(Answer(t0, seconds, ok, body.get("index_version"), names))
                i += args.swap_concurrency

        async def wait_job(job_id: str) -> dict[str, Any]:
            while (job := (await c.get(f"/v1/jobs/{job_id}")).json())["status"] not in (
                "done",
                "failed",
            ):
                await asyncio.sleep(0.2)
            if job["status"] != "done":
                raise RuntimeError(f"job {job_id} failed: {job['error']}")
            return dict(job)

        async def delete(name: str) -> int:
            r = await c.delete(f"/v1/identities/{name}")
            r.raise_for_status()
            removed_at[name], allowed[name] = time.perf_counter(), 0.0
            return int((await wait_job(r.json()["job"]["id"]))["result"]["index_version"])

        def outside(name: str) -> int:
            with index_lock(g.rt, wait_seconds=600):
                remove_identity(g.rt, name)
                removed_at[name], allowed[name] = time.perf_counter(), POLL_SECONDS + 0.5
                return build_and_publish(g.rt, g.model).index_version_id

        async def served(version: int) -> None:
            while (await c.get("/readyz")).json().get("index_version") != version:
                await asyncio.sleep(0.1)

        workers = [asyncio.create_task(worker(w)) for w in range(args.swap_concurrency)]
        t_start = time.perf_counter()
        pause = min(2.0, max(0.5, args.duration / 4))
        published: list[dict[str, Any]] = []
        await asyncio.sleep(pause)
        for step, name in enumerate(victims):
            t0 = time.perf_counter()
            if step == 1:
                version = await asyncio.to_thread(outside, name)
                how = "publish from another process (polled)"
            else:
                version = await delete(name)
                how = "DELETE /v1/identities (server job)"
            await served(version)
            published.append(
                {
                    "version": version,
                    "removed": name,
                    "how": how,
                    "seconds_to_served": time.perf_counter() - t0,
                }
            )
            await asyncio.sleep(pause)
        stop.set()
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - t_start

    wrong = [
        a
        for a in answers
        if any(v in a.names and a.started >= t + allowed[v] for v, t in removed_at.items())
    ]
    within_poll = [
        a
        for a in answers
        if any(v in a.names and t <= a.started < t + allowed[v] for v, t in removed_at.items())
    ]
    return {
        **percentiles([a.seconds for a in answers if a.ok]),
        "requests": len(answers),
        "failed": sum(not a.ok for a in answers),
        "removed_identity_answers": len(wrong),
        "removed_identity_answers_before_the_poll": len(within_poll),
        "victim_answers_before_removal": sum(
            any(v in a.names and a.started < removed_at.get(v, math.inf) for v in victims)
            for a in answers
        ),
        "versions_seen": sorted({a.version for a in answers if a.version is not None}),
        "published": published,
        "rps": len(answers) / elapsed,
        "seconds": elapsed,
        "concurrency": args.swap_concurrency,
    }


# ------------------------------------------------------------------ in-process reference


def paired(
    g: Gallery, base: str, key: str, args: argparse.Namespace, probes: np.ndarray
) -> dict[str, Any]:
    """The same identify and search in this process and over HTTP, one call of each in turn.

    In process: ``Identifier.identify`` of the photo and ``search`` + ``decide`` of a vector,
    as the command line runs them, with one faiss thread (as the server per request). Over
    HTTP: one request at a time from a kept-alive client. Taking turns call by call, both see
    the same load on the machine, which is what the 1.3x goal compares.
    """
    import httpx

    from pipelines.services.identification import Identifier

    ident = Identifier(g.rt)
    photo = g.photo.read_bytes()
    times: dict[str, list[float]] = {k: [] for k in ("identify", "search")}
    http: dict[str, list[float]] = {k: [] for k in ("identify", "search")}

    def timed(out: list[float], fn: Callable[..., Any], *args: Any) -> None:
        t0 = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t0)

    with (
        faiss_threads(1),
        httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as c,
    ):

        def local_identify() -> None:
            ident.identify([g.photo])

        def http_identify() -> None:
            c.post("/v1/identify", files={"image": ("p.png", photo)}).raise_for_status()

        def local_search(v: np.ndarray) -> None:
            ident.decide("p", ident.search(v[None])[0])

        def http_search(body: bytes) -> None:
            headers = {"Content-Type": "application/json"}
            c.post("/v1/search", content=body, headers=headers).raise_for_status()

        warm: dict[str, list[float]] = {k: [] for k in times}
        for i in range(args.inprocess + 5):
            local, remote = (times, http) if i >= 5 else (warm, warm)
            v = probes[i % len(probes)]
            timed(local["identify"], local_identify)
            timed(remote["identify"], http_identify)
            timed(local["search"], local_search, v)
            timed(remote["search"], http_search, json.dumps({"embedding": v.tolist()}).encode())
    out: dict[str, Any] = {}
    for name in times:
        a, b = percentiles(times[name]), percentiles(http[name])
        out[name] = {"in_process": a, "http": b, "ratio_p50": b["p50"] / a["p50"]}
    return out


# ------------------------------------------------------------------ main


def _has(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = start_record(NAME, args)
    # Other work on the machine shares its cores with the server and the client.
    record["hardware"]["loadavg_1min_start"] = os.getloadavg()[0]
    print_header(record)
    from pipelines.services.apikeys import create_api_key

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-api-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        g = prepare(args, workdir)
        record["index"] = g.index
        record["model"] = {
            "name": g.model.name,
            "dim": g.model.dim,
            "template": g.model.scoring.template,
        }
        probes, _ = g.data.probes(args.probes, seed=args.seed)
        record["server"] = {
            "workers": args.workers,
            "torch_threads": args.threads,
            "faiss_threads_per_request": 1,
            "http": "httptools+uvloop" if _has("httptools", "uvloop") else "h11+asyncio",
        }
        key = create_api_key(g.rt.sessions, "write").token
        photo = square_photo(g.photo, args.photo_size)
        g.photo = workdir / f"probe_{args.photo_size}.png"
        g.photo.write_bytes(photo)
        bodies = [json.dumps({"embedding": v.tolist()}).encode() for v in probes]
        record["client"] = args.client
        record["floors"] = {"faiss": faiss_floor(g, probes, 8, max(0.5, args.duration / 5))}
        print(f"faiss alone: {record['floors']['faiss']}", flush=True)
        record["answer_serialization"] = answer_serialization(200 if args.smoke else 5000)
        print(f"one answer's body: {record['answer_serialization']}", flush=True)

        rows: list[dict[str, Any]] = []
        running = contextlib.ExitStack()
        servers = [running.enter_context(api_server(g.rt, args, workdir / "server.log"))]
        if args.baseline:
            code = baseline_code(args.baseline, workdir / "baseline-code")
            log = workdir / "server-baseline.log"
            commit = subprocess.run(
                [
                    "git",
                    "-C",
                    str(Path(__file__).resolve().parents[1]),
                    "rev-parse",
                    "--short",
                    args.baseline,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            label = f"baseline {args.baseline} ({commit})"
            servers.append(
                running.enter_context(api_server(g.rt, args, log, label=label, code=code))
            )
        elif args.no_batching:
            log, env = workdir / "server-unbatched.log", {"SIAMID_API_BATCH_MAX": "1"}
            servers.append(
                running.enter_context(
                    api_server(g.rt, args, log, label="no batching", extra_env=env)
                )
            )
        record["servers"] = [s.label for s in servers]
        new = servers[0]
        record["paired"] = paired(g, new.base, key, args, probes)
        phase = 0
        for endpoint, requests, duration in (
            # The floor: what the HTTP stack and this client cost on this machine.
            ("/healthz", health_requests(), max(1.0, args.duration / 2)),
            ("/v1/search", search_requests(bodies), args.duration),
            ("/v1/identify", identify_requests(photo), args.duration),
        ):
            for conc in args.concurrencies:
                # In turns, first one then the other first: both see the same machine.
                for server in servers if phase % 2 == 0 else servers[::-1]:
                    rows.append(measure(server, key, endpoint, requests, conc, duration, args))
                phase += 1
        with running:
            record["swap"] = asyncio.run(swap_run(new.base, key, g, args))
        g.rt.engine.dispose()

    record["load"] = rows
    record["ratios"] = ratios(rows)
    record["hardware"]["loadavg_1min_end"] = os.getloadavg()[0]
    record["vectors"] = args.vectors
    swap = record["swap"]
    print(format_table(rows, COLUMNS))
    for name, pair in record["paired"].items():
        print(
            f"{name}, one call at a time, in turns: in process p50 "
            f"{pair['in_process']['p50']:.2f} ms, over HTTP p50 {pair['http']['p50']:.2f} ms "
            f"({pair['ratio_p50']:.2f}x)"
        )
    print(
        f"swap run (search, c={swap['concurrency']}): {swap['requests']} requests, "
        f"{swap['rps']:.0f} req/s, p50 {swap['p50']:.2f} ms, p99 {swap['p99']:.2f} ms; "
        f"{swap['failed']} failed, {swap['removed_identity_answers']} answers naming a removed "
        f"identity ({swap['removed_identity_answers_before_the_poll']} more within the poll "
        f"after a removal by another process); versions seen {swap['versions_seen']}"
    )
    for ratio in record["ratios"]:
        x = {k: ratio[k] or math.nan for k in ("rps", "p50", "server_cpu_ms")}
        print(
            f"{ratio['endpoint']} c={ratio['concurrency']}: {x['rps']:.2f}x the req/s, p50 "
            f"{x['p50']:.2f}x, server CPU/req {x['server_cpu_ms']:.2f}x of {ratio['baseline']}"
        )
    for p in swap["published"]:
        print(
            f"  version {p['version']}: {p['removed']} removed by {p['how']}, served after "
            f"{p['seconds_to_served']:.1f} s"
        )
    hw = record["hardware"]
    print(
        f"load average (1 min): {hw['loadavg_1min_start']:.1f} at start, "
        f"{hw['loadavg_1min_end']:.1f} at end"
    )
    path = write_result(NAME, record, args.out)
    print(f"wrote {path}")
    return record


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per phase, the first server's figures over the second's (new / baseline)."""
    out = []
    by_phase: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    order: list[str] = []
    for r in rows:
        by_phase.setdefault((r["endpoint"], r["concurrency"]), {})[r["server"]] = r
        if r["server"] not in order:
            order.append(r["server"])
    if len(order) < 2:
        return out
    new, base = order
    for (endpoint, conc), pair in by_phase.items():
        a, b = pair[new], pair[base]

        def over(key: str, a: dict[str, Any] = a, b: dict[str, Any] = b) -> float | None:
            return a[key] / b[key] if a.get(key) and b.get(key) else None

        out.append(
            {
                "endpoint": endpoint,
                "concurrency": conc,
                "baseline": base,
                "rps": over("rps"),
                "p50": over("p50"),
                "server_cpu_ms": over("server_cpu_ms"),
            }
        )
    return out


COLUMNS = (
    Column("server", "server"),
    Column("endpoint", "endpoint"),
    Column("concurrency", "clients"),
    Column("requests", "requests"),
    Column("rps", "req/s", ".0f"),
    Column("p50", "p50 ms", ".2f"),
    Column("p95", "p95 ms", ".2f"),
    Column("p99", "p99 ms", ".2f"),
    Column("server_mean", "server mean ms", ".2f"),
    Column("server_cpu_ms", "server CPU ms/req", ".2f"),
    Column("mean_batch", "mean batch", ".1f"),
    Column("failed", "failed"),
)


if __name__ == "__main__":
    main()
