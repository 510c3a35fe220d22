"""Identify benchmark: latency of one pre-embedded probe at 1M gallery vectors, SQLite/PostgreSQL.

What is timed per probe is ``Identifier.search`` followed by ``Identifier.decide``: the FAISS
search (``search_k`` = 50 neighbours), the SQL metadata look-ups by primary key
(face_image -> identity, identity names), grouping by identity and the threshold decision.
The probe vector is already computed, so the encoder is not part of it.

Set-up, not timed: synthetic face-like embeddings (N/10 identities x 10 images, as in
``bench_index.py``); one index built with ``choose_factory(N, d, --kind)`` whose ids are the
face_image primary keys; for each backend a fresh database migrated to head and bulk-filled
with N ``face_image`` rows, N/10 ``identity`` rows, a ``model_version`` and a published
``index_version`` pointing at the index file. ``Identifier`` is built with its real
constructor (published index, checksum, model row, threshold = margin/2) except that the
encoder is not loaded: there is no checkpoint, and a pre-embedded probe does not need one.

Also measured in the same run: the index search alone (to split the latency between FAISS
and SQL), recall@1 of the index against exact search, rank-1 accuracy of the decisions, and
the deepface-``find``-style brute force at the same N (``bench.common.DeepFaceStyleBaseline``).
Within each repeat the backends and the brute force take turns, so that all of them see the
same machine load.

    python bench/bench_identify.py --postgres-url postgresql+psycopg://USER@HOST:PORT/postgres
    python bench/bench_identify.py --backends sqlite --n 200000
    python bench/bench_identify.py --smoke

PostgreSQL needs an admin URL (``--postgres-url``, or ``SIAMID_BENCH_POSTGRES_URL`` /
``SIAMID_TEST_POSTGRES_URL``): a database ``bench_identify_<random>`` is created and dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Column,
    DeepFaceStyleBaseline,
    FaceEmbeddings,
    base_parser,
    exact_neighbours,
    face_embeddings,
    faiss_threads,
    format_table,
    open_bench_runtime,
    percentiles,
    postgres_admin_url,
    print_header,
    start_record,
    temporary_postgres_database,
    time_calls,
    write_result,
)
from index.factory import choose_factory  # noqa: E402
from index.vector_index import VectorIndex  # noqa: E402

NAME = "bench_identify"
INSERT_CHUNK = 50_000
#: Registered margin of the fake model: threshold margin/2 = 1.0 sits between same-person
#: (~0.72 at spread 0.6) and different-person (~1.4) distances of the synthetic data.
MARGIN = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = base_parser(__doc__ or NAME)
    p.add_argument("--n", type=int, default=1_000_000, help="gallery vectors (default: 1M)")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension (default: 128)")
    p.add_argument("--per-identity", type=int, default=10, help="images per identity")
    p.add_argument("--spread", type=float, default=0.6, help="within-identity noise")
    p.add_argument(
        "--kind",
        default="auto",
        help="index kind for choose_factory (default: auto, i.e. what embed picks)",
    )
    p.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="IVF nprobe stored in the index (default: the factory's default)",
    )
    p.add_argument("--probes", type=int, default=1000, help="timed probes per backend")
    p.add_argument(
        "--search-threads",
        type=int,
        default=1,
        help="faiss threads while probes are timed (default: 1; --threads is used "
        "to build the index)",
    )
    p.add_argument("--top-k", type=int, default=5, help="Identifier top_k (default: 5)")
    p.add_argument(
        "--backends",
        default="sqlite,postgres",
        help="comma-separated: sqlite, postgres (default: both)",
    )
    p.add_argument(
        "--postgres-url",
        default=None,
        help="admin URL of a PostgreSQL server (a database is created and dropped)",
    )
    p.add_argument(
        "--baseline-queries",
        type=int,
        default=10,
        help="probes timed for the brute-force baseline per repeat (default: 10)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the index and SQLite files go (default: a temporary folder)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.probes, args.baseline_queries, args.repeats = 5000, 50, 5, 1
    return args


# ------------------------------------------------------------------ set-up


def build_index(
    data: FaceEmbeddings, ids: np.ndarray, kind: str, nprobe: int | None, path: Path
) -> tuple[VectorIndex, str, float]:
    """Build the gallery's index from the synthetic vectors and save it: (index, sha, seconds)."""
    t0 = time.perf_counter()
    index = VectorIndex.create(
        choose_factory(data.n, data.dim, kind), data.dim, "l2", nprobe=nprobe
    )
    index.train(data.vectors)
    index.add(data.vectors, ids)
    seconds = time.perf_counter() - t0
    return index, index.save(path), seconds


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def populate(
    rt: Any, n: int, per_identity: int, index: VectorIndex, index_path: Path, sha: str
) -> float:
    """Bulk-fill SQL for a gallery of ``n`` images, ``per_identity`` per person: identities,
    face images (id = vector id: row r is image r + 1 of identity r // per_identity + 1), the
    model and a published index version. Returns the seconds it took."""
    from sqlalchemy import insert, text

    from storage.indexes import create_index_version, publish_index_version
    from storage.models import FaceImage, Identity
    from storage.registry import NewModelVersion, register_model_version

    t0 = time.perf_counter()
    now = datetime.now(UTC)
    identities = -(-n // per_identity)
    with rt.engine.begin() as conn:
        for rows in _chunks(identities, INSERT_CHUNK):
            conn.execute(
                insert(Identity),
                [
                    {
                        "id": i + 1,
                        "name": f"person_{i:07d}",
                        "attributes": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in rows
                ],
            )
        for rows in _chunks(n, INSERT_CHUNK):
            conn.execute(
                insert(FaceImage),
                [
                    {
                        "id": r + 1,
                        "identity_id": r // per_identity + 1,
                        "source_uri": f"/gallery/person_{r // per_identity:07d}/"
                        f"{r % per_identity:03d}.png",
                        "sha256": f"{r + 1:064x}",
                        "width": 92,
                        "height": 112,
                        "mode": "L",
                        "status": "accepted",
                        "reject_reason": None,
                        "reject_detail": None,
                        "imported_at": now,
                    }
                    for r in rows
                ],
            )
    with rt.sessions.begin() as s:
        model = register_model_version(
            session=s,
            model=NewModelVersion(
                name="bench-identify",
                architecture="siamese",
                config={},
                checkpoint_path="/nonexistent/bench.pt",
                checkpoint_sha256="0" * 64,
                embedding_dim=index.dim,
                distance="l2",
                margin=MARGIN,
                metrics={},
            ),
        )
        row = create_index_version(
            session=s, model_version_id=model.id, factory=index.factory, path=str(index_path)
        )
        publish_index_version(
            session=s, index_version_id=row.id, sha256=sha, vector_count=index.ntotal
        )
    with rt.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - t0


@contextlib.contextmanager
def backend_runtime(backend: str, workdir: Path, admin_url: str | None) -> Iterator[Any]:
    """A migrated, empty database of the backend; PostgreSQL's is dropped afterwards."""
    if backend == "sqlite":
        yield open_bench_runtime(workdir / "home-sqlite")
    elif backend == "postgres":
        if admin_url is None:
            raise ValueError("postgres needs --postgres-url or SIAMID_BENCH_POSTGRES_URL")
        with temporary_postgres_database(admin_url, "bench_identify") as url:
            rt = open_bench_runtime(workdir / "home-postgres", url)
            try:
                yield rt
            finally:
                rt.engine.dispose()
    else:
        raise ValueError(f"unknown backend {backend!r}; use sqlite or postgres")


def identifier(rt: Any, top_k: int) -> Any:
    """``Identifier(rt)`` for pre-embedded probes: the real constructor, encoder not loaded."""
    from pipelines.services.identification import Identifier

    with (
        mock.patch.object(rt.encoders, "get", return_value=None),
        mock.patch("pipelines.services.identification.Forward"),
    ):
        return Identifier(rt, top_k=top_k)


# ------------------------------------------------------------------ measuring


class BackendBench:
    """One backend's ``Identifier`` and the latencies collected from it over the repeats."""

    def __init__(self, name: str, rt: Any, probes: np.ndarray, top_k: int) -> None:
        self.name, self.probes = name, probes
        self.ident = identifier(rt, top_k)
        self.decisions: dict[int, Any] = {}
        self.full: list[float] = []
        self.bare: list[float] = []

    def identify_one(self, i: int) -> None:
        candidates = self.ident.search(self.probes[i][None])[0]
        self.decisions[i] = self.ident.decide(f"probe-{i}", candidates)

    def index_only(self, i: int) -> None:
        self.ident.index.search(self.probes[i][None], self.ident.search_k)

    def run_once(self) -> None:
        """Every probe through search + decide, then through the index alone."""
        self.full += time_calls(self.identify_one, len(self.probes), warmup=20)
        self.bare += time_calls(self.index_only, len(self.probes), warmup=20)

    def summary(self, expected: list[str]) -> dict[str, Any]:
        """Latency percentiles (ms), the split index / rest, rank-1 accuracy and match rate."""
        got = [self.decisions[i] for i in range(len(self.probes))]
        rank1 = np.mean(
            [d.candidates[0].identity == expected[i] for i, d in enumerate(got) if d.candidates]
        )
        out = {
            **percentiles(self.full),
            "index_only": percentiles(self.bare),
            "samples": len(self.full),
            "rank1": float(rank1),
            "match_rate": float(np.mean([d.decision == "match" for d in got])),
            "threshold": self.ident.threshold,
            "threshold_source": self.ident.threshold_source,
            "search_k": self.ident.search_k,
            "factory": self.ident.index.factory,
            "index_info": self.ident.index.info(),
        }
        out["sql_and_decide_p50"] = out["p50"] - out["index_only"]["p50"]
        return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = start_record(NAME, args)
    print_header(record)
    print(f"probes timed with {args.search_threads} faiss thread(s)", flush=True)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    admin_url = postgres_admin_url(args.postgres_url) if "postgres" in backends else None
    if "postgres" in backends and admin_url is None:
        print(
            "no PostgreSQL URL (--postgres-url / SIAMID_BENCH_POSTGRES_URL): postgres skipped",
            file=sys.stderr,
        )
        backends.remove("postgres")

    data = face_embeddings(
        args.n, dim=args.dim, per_identity=args.per_identity, spread=args.spread, seed=args.seed
    )
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    probes, who = data.probes(args.probes, seed=args.seed)
    expected = [f"person_{i:07d}" for i in who]

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-identify-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        index_path = workdir / "index.faiss"
        index, sha, build_s = build_index(data, ids, args.kind, args.nprobe, index_path)
        _, found = index.search(probes, 50)
        truth = ids[exact_neighbours(data.vectors, probes)[:, 0]]
        record["index"] = {
            "factory": index.factory,
            "info": index.info(),
            "build_seconds": build_s,
            "recall_at_1": float(np.mean(found[:, 0] == truth)),
        }
        print(
            f"index {index.factory} built in {build_s:.1f} s, recall@1 "
            f"{record['index']['recall_at_1']:.4f}",
            flush=True,
        )

        benches: list[BackendBench] = []
        record["populate_seconds"] = {}
        for backend in backends:
            rt = stack.enter_context(backend_runtime(backend, workdir, admin_url))
            fill = populate(rt, args.n, args.per_identity, index, index_path, sha)
            record["populate_seconds"][backend] = fill
            print(f"{backend}: {args.n:,} rows in {fill:.1f} s", flush=True)
            benches.append(BackendBench(backend, rt, probes, args.top_k))
        del index, found
        baseline = DeepFaceStyleBaseline(
            data.vectors, [f"person_{i:07d}" for i in data.identity_of(np.arange(args.n))]
        )
        del data
        gc.collect()

        # Backends and the brute force take turns within each repeat, so that all of them
        # see the same machine load.
        base_lat: list[float] = []
        with faiss_threads(args.search_threads):
            for _ in range(args.repeats):
                for bench in benches:
                    bench.run_once()
                base_lat += baseline.latencies(probes, count=args.baseline_queries, max_seconds=60)
        baseline.close()
        record["baseline"] = {**percentiles(base_lat), "samples": len(base_lat)}
        record["backends"] = {b.name: b.summary(expected) for b in benches}

    rows = [
        {
            "backend": "brute force",
            "factory": "pandas+numpy scan",
            "recall": 1.0,
            **record["baseline"],
            "speedup": 1.0,
        }
    ]
    for backend, r in record["backends"].items():
        rows.append(
            {
                "backend": backend,
                "factory": r["factory"],
                "recall": record["index"]["recall_at_1"],
                "p50": r["p50"],
                "p95": r["p95"],
                "p99": r["p99"],
                "index_p50": r["index_only"]["p50"],
                "sql_p50": r["sql_and_decide_p50"],
                "rank1": r["rank1"],
                "speedup": record["baseline"]["p50"] / r["p50"],
            }
        )
    record["n"] = args.n
    print(format_table(rows, COLUMNS))
    path = write_result(NAME, record, args.out)
    print(f"wrote {path}")
    return record


COLUMNS = (
    Column("backend", "backend"),
    Column("factory", "index"),
    Column("recall", "recall@1", ".4f"),
    Column("p50", "p50 ms", ".3f"),
    Column("p95", "p95 ms", ".3f"),
    Column("p99", "p99 ms", ".3f"),
    Column("index_p50", "index p50 ms", ".3f"),
    Column("sql_p50", "SQL+decide p50 ms", ".3f"),
    Column("rank1", "rank-1", ".4f"),
    Column("speedup", "x brute (p50)", lambda v: f"{v:,.0f}" if math.isfinite(v) else "-"),
)


if __name__ == "__main__":
    main()
