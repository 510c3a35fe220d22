"""HTTP API benchmark: a real ``siamid api`` process on 127.0.0.1 under an httpx (async) load.

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

1. in process, for reference: ``Identifier.identify`` of the probe photo (embed + search +
   SQL + decision) and ``Identifier.search`` + ``decide`` of a probe vector, as the command
   line does them; the API's goal is an identify p50 within 1.3x of the in-process one;
2. ``POST /v1/search`` (a probe vector as JSON) and ``POST /v1/identify`` (the photo as
   multipart) at each ``--concurrency`` for ``--duration`` seconds: p50/p95/p99 and req/s;
3. a swap run: ``/v1/search`` at ``--swap-concurrency`` while three index versions are
   published, each removing an identity that a share of the probes target: (a) ``DELETE
   /v1/identities/{name}`` (the server's job publishes), (b) a removal and publish from this
   process (as ``siamid embed`` would; the server finds it by polling SQL), (c) another
   ``DELETE``. Counted: failed requests, and answers naming an identity after its removal
   committed; both must be zero.

    python bench/bench_api.py --vectors 1000000 --threads 2
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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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
    percentiles,
    prepare_gallery,
    print_header,
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
    args = p.parse_args(argv)
    if args.smoke:
        args.vectors, args.duration, args.concurrency = 3000, 1.0, "1,4"
        args.swap_concurrency, args.probes, args.inprocess = 4, 100, 10
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
    factory = choose_factory(int(plan.live_ids.size), model.dim, args.kind)
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
        workdir, identities=4, per_identity=4, seed=args.seed, train_people=4, members=1
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def siamid_command() -> list[str]:
    script = shutil.which("siamid", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from pipelines.cli import main; main()"]


@contextlib.contextmanager
def api_server(rt: Any, args: argparse.Namespace, log: Path) -> Iterator[str]:
    """``siamid api`` on a free port of 127.0.0.1 over the bench's home; its base URL."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "SIAMID_HOME": str(rt.settings.home_dir),
        "SIAMID_DATABASE_URL": rt.settings.db_url,
        "SIAMID_TORCH_THREADS": str(args.threads),
        "OMP_NUM_THREADS": str(args.threads),
        "SIAMID_API_SEARCH_THREADS": "1",
        "SIAMID_API_ACCESS_LOG": "false",
        "SIAMID_API_POLL_SECONDS": "1.0",
    }
    cmd = [*siamid_command(), "api", "--port", str(port), "--workers", str(args.workers)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
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
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ------------------------------------------------------------------ load generation


Send = Callable[[Any, int], Awaitable[Any]]


async def load(
    base: str, key: str, send: Send, concurrency: int, duration: float
) -> dict[str, Any]:
    """``concurrency`` clients sending back to back for ``duration`` s: latencies of the
    answered requests (200), the count of the others, and req/s."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, timeout=120, limits=limits
    ) as client:
        for i in range(min(20, 2 * concurrency)):  # warm-up: connections, caches
            await send(client, i)
        latencies: list[float] = []
        failed = 0
        stop_at = time.perf_counter() + duration

        async def worker(w: int) -> None:
            nonlocal failed
            i = w
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    ok = (await send(client, i)).status_code == 200
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


def health_sender() -> Send:
    async def send(client: Any, i: int) -> Any:
        return await client.get("/healthz")

    return send


def search_sender(bodies: list[bytes]) -> Send:
    headers = {"Content-Type": "application/json"}

    async def send(client: Any, i: int) -> Any:
        return await client.post("/v1/search", content=bodies[i % len(bodies)], headers=headers)

    return send


def identify_sender(photo: bytes) -> Send:
    async def send(client: Any, i: int) -> Any:
        return await client.post("/v1/identify", files={"image": ("probe.png", photo)})

    return send


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
            removed_at[name] = time.perf_counter()
            return int((await wait_job(r.json()["job"]["id"]))["result"]["index_version"])

        def outside(name: str) -> int:
            with index_lock(g.rt, wait_seconds=600):
                remove_identity(g.rt, name)
                removed_at[name] = time.perf_counter()
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
        a for a in answers if any(v in a.names and a.started >= t for v, t in removed_at.items())
    ]
    return {
        **percentiles([a.seconds for a in answers if a.ok]),
        "requests": len(answers),
        "failed": sum(not a.ok for a in answers),
        "removed_identity_answers": len(wrong),
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
        record["model"] = {"name": g.model.name, "dim": g.model.dim}
        probes, _ = g.data.probes(args.probes, seed=args.seed)
        record["server"] = {
            "workers": args.workers,
            "torch_threads": args.threads,
            "faiss_threads_per_request": 1,
            "http": "httptools+uvloop" if _has("httptools", "uvloop") else "h11+asyncio",
        }
        key = create_api_key(g.rt.sessions, "write").token
        photo = g.photo.read_bytes()
        bodies = [json.dumps({"embedding": v.tolist()}).encode() for v in probes]

        rows: list[dict[str, Any]] = []
        with api_server(g.rt, args, workdir / "server.log") as base:
            record["paired"] = paired(g, base, key, args, probes)
            for endpoint, send, duration in (
                # The floor: what the HTTP stack and this client cost on this machine.
                ("/healthz", health_sender(), max(1.0, args.duration / 2)),
                ("/v1/search", search_sender(bodies), args.duration),
                ("/v1/identify", identify_sender(photo), args.duration),
            ):
                for conc in args.concurrencies:
                    before = server_seconds(base, endpoint)
                    res = asyncio.run(load(base, key, send, conc, duration))
                    after = server_seconds(base, endpoint)
                    served = after[1] - before[1]
                    res["server_mean"] = 1e3 * (after[0] - before[0]) / served if served else None
                    rows.append({"endpoint": endpoint, "concurrency": conc, **res})
                    print(
                        f"{endpoint} c={conc}: p50 {res['p50']:.2f} ms, {res['rps']:.0f} req/s, "
                        f"{res['failed']} failed",
                        flush=True,
                    )
            record["swap"] = asyncio.run(swap_run(base, key, g, args))
        g.rt.engine.dispose()

    record["load"] = rows
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
        f"identity; versions seen {swap['versions_seen']}"
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


COLUMNS = (
    Column("endpoint", "endpoint"),
    Column("concurrency", "clients"),
    Column("requests", "requests"),
    Column("rps", "req/s", ".0f"),
    Column("p50", "p50 ms", ".2f"),
    Column("p95", "p95 ms", ".2f"),
    Column("p99", "p99 ms", ".2f"),
    Column("server_mean", "server mean ms", ".2f"),
    Column("failed", "failed"),
)


if __name__ == "__main__":
    main()
