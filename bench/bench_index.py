"""Index benchmark: build time, memory, recall@1 and QPS of each index kind, vs. brute force.

For every gallery size N (default 100k and 1M) the script makes synthetic face-like
embeddings (N/10 identities x 10 images, unit norm, d=128, see ``--spread``) and mated probes
(new images of enrolled identities), then for each index kind (``flat``, ``auto`` =
``choose_factory(N, d, "auto")``, ``hnsw``, ``ivfpq``, ``ivfpq-rflat``, built through
``index.VectorIndex``) measures:

* build time (create + train + add) and memory: the saved file's bytes per vector and the
  process RSS growth per vector;
* recall@1 against exact search, sweeping ``nprobe`` (IVF) or ``efSearch`` (HNSW) upwards and
  keeping the first value that reaches ``--target-recall`` (the sweep is in the JSON);
* QPS at batch 1 (one probe per call, as ``siamid identify`` runs) and at batch 1000;
* the speed-up at batch 1 over a deepface-``find``-style brute force (all vectors in a pandas
  DataFrame column, a numpy distance to every row per probe, arg-min; see
  ``bench.common.DeepFaceStyleBaseline``), timed on the same vectors right before each
  index's batch-1 loop so that both see the same machine load.

Searches ask for ``--k`` neighbours (default 50, the ``search_k`` of ``Identifier``). HNSW at
large N is built under a time cap (``--hnsw-max-seconds``) and/or on a sub-sample
(``--hnsw-max-n``); the row then says on how many vectors it was measured.

    python bench/bench_index.py                       # N = 100k and 1M (tens of minutes)
    python bench/bench_index.py --sizes 100000 --kinds flat,auto
    python bench/bench_index.py --smoke               # seconds
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    median,
    percentiles,
    print_header,
    rss_bytes,
    start_record,
    time_calls,
    write_result,
)
from index.factory import choose_factory  # noqa: E402
from index.vector_index import VectorIndex  # noqa: E402

NAME = "bench_index"
DEFAULT_KINDS = ("flat", "auto", "hnsw", "ivfpq", "ivfpq-rflat")
NPROBES = (8, 16, 32, 64, 128, 256, 512, 1024)
EF_SEARCHES = (16, 32, 64, 128, 256, 512, 1024)
HNSW_CHUNK = 50_000
#: Recall within this of the best counts as the plateau when the target is out of reach.
PLATEAU = 0.002


@dataclass
class SweepPoint:
    value: int | None
    recall: float  # top-1 is the exact nearest neighbour
    identity_recall: float  # top-1 is an image of the exact nearest neighbour's person
    batch_seconds: float


@dataclass
class ProbeSet:
    """Probe vectors and the id of each one's exact nearest neighbour (ids are row + 1)."""

    queries: np.ndarray
    truth_ids: np.ndarray
    per_identity: int

    def __len__(self) -> int:
        return len(self.queries)

    def score(self, found_ids: np.ndarray) -> tuple[float, float]:
        """(recall@1, same-person@1) of the top result of each search row."""
        top = found_ids[:, 0]
        person = (top - 1) // self.per_identity == (self.truth_ids - 1) // self.per_identity
        return float(np.mean(top == self.truth_ids)), float(np.mean(person & (top >= 0)))


@dataclass
class KindResult:
    """One index kind at one gallery size."""

    n: int
    kind: str
    factory: str
    vectors: int  # how many it was built and measured on (< n: HNSW sub-sample)
    build_s: float
    file_bytes_per_vector: float
    rss_bytes_per_vector: float
    param: str | None
    value: int | None
    default_value: int | None
    recall_default: float
    recall: float
    identity_recall: float
    qps_b1: float
    p50_b1_ms: float
    p99_b1_ms: float
    qps_b1000: float
    baseline_p50_ms: float
    speedup_b1: float
    note: str = ""
    sweep: list[SweepPoint] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = base_parser(__doc__ or NAME)
    p.add_argument(
        "--sizes",
        default="100000,1000000",
        help="comma-separated gallery sizes N (default: 100000,1000000)",
    )
    p.add_argument(
        "--kinds",
        default=",".join(DEFAULT_KINDS),
        help=f"comma-separated index kinds (default: {','.join(DEFAULT_KINDS)})",
    )
    p.add_argument("--dim", type=int, default=128, help="embedding dimension (default: 128)")
    p.add_argument("--per-identity", type=int, default=10, help="images per identity")
    p.add_argument(
        "--spread",
        type=float,
        default=0.6,
        help="within-identity noise (0.6: same-person images ~0.72 apart, different people ~1.41)",
    )
    p.add_argument(
        "--queries",
        type=int,
        default=1000,
        help="probes for recall and the batch QPS (default: 1000)",
    )
    p.add_argument("--k", type=int, default=50, help="neighbours per search (default: 50)")
    p.add_argument(
        "--target-recall",
        type=float,
        default=0.99,
        help="recall@1 the nprobe/efSearch sweep stops at (default: 0.99)",
    )
    p.add_argument(
        "--b1-queries",
        type=int,
        default=300,
        help="single-probe searches timed per index (default: 300)",
    )
    p.add_argument(
        "--b1-threads",
        type=int,
        default=1,
        help="faiss threads for the batch-1 searches (default: 1; the brute-force "
        "baseline is single-threaded numpy)",
    )
    p.add_argument(
        "--b1-max-seconds",
        type=float,
        default=15.0,
        help="time cap of the batch-1 loop per index (default: 15)",
    )
    p.add_argument(
        "--baseline-queries",
        type=int,
        default=10,
        help="probes timed for the brute-force baseline right before each index's "
        "batch-1 loop (default: 10)",
    )
    p.add_argument(
        "--hnsw-max-n",
        type=int,
        default=None,
        help="build HNSW on at most this many vectors (default: all)",
    )
    p.add_argument(
        "--hnsw-max-seconds",
        type=float,
        default=900.0,
        help="stop adding to HNSW after this long, measure what was built (default: 900)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.queries, args.b1_queries, args.baseline_queries = "3000", 50, 20, 5
        args.repeats, args.hnsw_max_n = 1, 2000
    return args


# ------------------------------------------------------------------ measuring one kind


def build_index(
    kind: str,
    data: FaceEmbeddings,
    ids: np.ndarray,
    *,
    max_n: int | None = None,
    max_seconds: float | None = None,
) -> tuple[VectorIndex, float, int]:
    """Create, train and add; returns (index, seconds, RSS growth in bytes).

    With ``max_n``/``max_seconds`` vectors are added in chunks of :data:`HNSW_CHUNK` (whole
    identities) and adding stops at the cap; ``index.ntotal`` tells how many went in.
    """
    limit = min(data.n, max_n or data.n)
    vectors = data.vectors[:limit]
    factory = choose_factory(limit, data.dim, kind)
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    index = VectorIndex.create(factory, data.dim, "l2")
    index.train(vectors)
    chunk = HNSW_CHUNK if (max_seconds is not None or max_n is not None) else limit
    for start in range(0, limit, chunk):
        stop = min(limit, start + chunk)
        index.add(vectors[start:stop], ids[start:stop])
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    seconds = time.perf_counter() - t0
    return index, seconds, rss_bytes() - rss0


def file_size(index: VectorIndex) -> int:
    """Bytes of the index as ``VectorIndex.save`` writes it."""
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        path = Path(tmp) / "index.faiss"
        index.save(path)
        return path.stat().st_size


def search_param(index: VectorIndex, k: int) -> tuple[str, int, tuple[int, ...]] | None:
    """(parameter name, its default in the index, candidate values) for the sweep, or None
    for structures without a search-time parameter (Flat)."""
    info = index.info()
    if "nprobe" in info:
        nlist = int(info["nlist"])
        values = sorted({v for v in NPROBES if v <= nlist} | {int(info["nprobe"])})
        return "nprobe", int(info["nprobe"]), tuple(values)
    if "ef_search" in info:
        # faiss searches HNSW with max(efSearch, k): smaller values are all the same search.
        values = sorted({v for v in EF_SEARCHES if v >= k} | {int(info["ef_search"])})
        return "ef_search", int(info["ef_search"]), tuple(values)
    return None


def search(
    index: VectorIndex, queries: np.ndarray, k: int, param: str | None, value: int | None
) -> tuple[np.ndarray, np.ndarray]:
    kwargs = {param: value} if param and value is not None else {}
    return index.search(queries, k, **kwargs)


def recall_at_1(
    index: VectorIndex, probes: ProbeSet, k: int, param: str | None, value: int | None
) -> SweepPoint:
    t0 = time.perf_counter()
    _, found = search(index, probes.queries, k, param, value)
    seconds = time.perf_counter() - t0
    return SweepPoint(value, *probes.score(found), seconds)


def sweep(
    index: VectorIndex, probes: ProbeSet, k: int, target: float
) -> tuple[str | None, int | None, list[SweepPoint]]:
    """The smallest nprobe/efSearch with recall@1 >= target: (param, chosen value, points).

    Values are tried in ascending order until one reaches the target; the index's default is
    always measured too. If none reaches it (PQ codes plateau below it), the smallest value
    within :data:`PLATEAU` of the best recall is kept.
    """
    tunable = search_param(index, k)
    if tunable is None:
        return None, None, [recall_at_1(index, probes, k, None, None)]
    param, default, values = tunable
    measured = {default: recall_at_1(index, probes, k, param, default)}
    chosen: int | None = None
    for value in values:
        if value not in measured:
            measured[value] = recall_at_1(index, probes, k, param, value)
        if measured[value].recall >= target:
            chosen = value
            break
    points = [measured[v] for v in sorted(measured)]
    if chosen is None:
        best = max(pt.recall for pt in points)
        chosen = next(pt.value for pt in points if pt.recall >= best - PLATEAU)
    return param, chosen, points


def measure_kind(
    kind: str,
    data: FaceEmbeddings,
    ids: np.ndarray,
    probes: np.ndarray,
    baseline: DeepFaceStyleBaseline,
    args: argparse.Namespace,
) -> tuple[KindResult, list[float]]:
    """Build one kind and measure it; HNSW may stop early (see ``--hnsw-max-*``).

    The brute-force baseline is timed on the same vectors right before the batch-1 loop, so
    the speed-up compares the two under the same machine load. Returns the result and the
    baseline's latencies.
    """
    capped = kind == "hnsw"
    index, build_s, rss = build_index(
        kind,
        data,
        ids,
        max_n=args.hnsw_max_n if capped else None,
        max_seconds=args.hnsw_max_seconds if capped else None,
    )
    built = index.ntotal
    note = ""
    if built < data.n:
        # Measured on the first `built` vectors (whole identities): probes and ground truth
        # must come from that subset.
        pool = built // data.per_identity
        probes, _ = data.probes(len(probes), seed=args.seed + 1, identities=pool)
        note = f"built on {built:,} of {data.n:,} vectors ({build_s:.0f} s)"
    truth = ids[exact_neighbours(data.vectors[:built], probes)[:, 0]]
    probe_set = ProbeSet(probes, truth, data.per_identity)
    param, value, points = sweep(index, probe_set, args.k, args.target_recall)
    tunable = search_param(index, args.k)
    default_value = None if tunable is None else tunable[1]
    default_point = next(pt for pt in points if pt.value == default_value)
    chosen_point = next(pt for pt in points if pt.value == value)

    base = baseline.latencies(probes, count=args.baseline_queries, max_seconds=30.0, rows=built)
    batch = probes[: min(1000, len(probes))]
    b1000 = [
        _timed(lambda: search(index, batch, args.k, param, value)) for _ in range(args.repeats)
    ]
    with faiss_threads(args.b1_threads):
        b1 = time_calls(
            lambda i: search(index, probes[i % len(probes)][None], args.k, param, value),
            args.b1_queries,
            max_seconds=args.b1_max_seconds,
        )
    pct = percentiles(b1)
    base_p50 = percentiles(base)["p50"]
    return KindResult(
        n=data.n,
        kind=kind,
        factory=index.factory,
        vectors=built,
        build_s=build_s,
        file_bytes_per_vector=file_size(index) / built,
        rss_bytes_per_vector=rss / built,
        param=param,
        value=value,
        default_value=default_point.value,
        recall_default=default_point.recall,
        recall=chosen_point.recall,
        identity_recall=chosen_point.identity_recall,
        qps_b1=len(b1) / sum(b1),
        p50_b1_ms=pct["p50"],
        p99_b1_ms=pct["p99"],
        qps_b1000=len(batch) / median(b1000),
        baseline_p50_ms=base_p50,
        speedup_b1=base_p50 / pct["p50"],
        note=note,
        sweep=points,
    ), base


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ one gallery size


def run_size(n: int, kinds: list[str], args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = face_embeddings(
        n, dim=args.dim, per_identity=args.per_identity, spread=args.spread, seed=args.seed
    )
    ids = np.arange(1, n + 1, dtype=np.int64)  # like face_image primary keys
    probes, _ = data.probes(args.queries, seed=args.seed)
    print(f"N={n:,}: data in {time.perf_counter() - t0:.1f} s", flush=True)

    baseline = DeepFaceStyleBaseline(data.vectors, data.identity_of(np.arange(n)))
    rows: list[KindResult] = []
    base_lat: list[float] = []
    for kind in kinds:
        row, lat = measure_kind(kind, data, ids, probes, baseline, args)
        gc.collect()  # free this kind's index before the next one is built
        rows.append(row)
        if row.vectors == n:
            base_lat += lat
        print(
            f"N={n:,}: {kind} ({row.factory}) done: recall {row.recall:.4f} "
            f"p50 {row.p50_b1_ms:.2f} ms, brute force {row.baseline_p50_ms:.1f} ms",
            flush=True,
        )
    base_pct = percentiles(base_lat)
    base = {
        "n": n,
        "queries": len(base_lat),
        "p50_ms": base_pct["p50"],
        "p99_ms": base_pct["p99"],
        "qps_b1": len(base_lat) / sum(base_lat) if base_lat else None,
        "stack_seconds": baseline.stack_seconds,
    }
    baseline.close()
    return {"n": n, "baseline": base, "indexes": [asdict(r) for r in rows]}


COLUMNS = (
    Column("n", "N", ","),
    Column("kind", "kind"),
    Column("factory", "factory"),
    Column("build_s", "build s", ".1f"),
    Column("file_bytes_per_vector", "B/vec file", ".0f"),
    Column("rss_bytes_per_vector", "B/vec RSS", ".0f"),
    Column("setting", "search param"),
    Column("recall", "recall@1", ".4f"),
    Column("identity_recall", "person@1", ".4f"),
    Column("qps_b1", "QPS b=1", ",.0f"),
    Column("p50_b1_ms", "p50 b=1 ms", ".3f"),
    Column("qps_b1000", "QPS b=1000", ",.0f"),
    Column("baseline_p50_ms", "brute p50 ms", ".1f"),
    Column("speedup_b1", "x brute b=1", ",.0f"),
    Column("note", "note"),
)


def table_rows(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        base = size["baseline"]
        rows.append(
            {
                "n": size["n"],
                "kind": "brute force",
                "factory": "pandas+numpy scan",
                "recall": 1.0,
                "identity_recall": 1.0,
                "qps_b1": base["qps_b1"],
                "p50_b1_ms": base["p50_ms"],
                "speedup_b1": 1.0,
                "note": f"{base['queries']} probes",
            }
        )
        for r in size["indexes"]:
            setting = None
            if r["param"] is not None:
                setting = f"{r['param']}={r['value']}"
                if r["value"] != r["default_value"]:
                    setting += f" (default {r['default_value']}: {r['recall_default']:.4f})"
            rows.append({**r, "setting": setting})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = start_record(NAME, args)
    print_header(record)
    print(
        f"batch-1 searches with {args.b1_threads} faiss thread(s), batch-1000 with "
        f"{record['threads']['faiss_omp']}; k={args.k}",
        flush=True,
    )
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    record["k"], record["spread"] = args.k, args.spread
    record["sizes"] = [run_size(n, kinds, args) for n in sizes]
    print(format_table(table_rows(record["sizes"]), COLUMNS))
    path = write_result(NAME, record, args.out)
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
