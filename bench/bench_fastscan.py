"""IVF lists scanned flat vs. 4-bit fast-scan codes re-ranked exactly, side by side, in one run.

The service's default index above 50,000 vectors changed from ``IVF{nlist},Flat`` (kind
``ivf``) to ``IDMap2,IVF{nlist},PQ{m}x4fs,RFlat`` (kind ``ivf-fastscan``, see
``index.factory``). Both are built through ``index.VectorIndex`` over the same synthetic
face-like vectors (``bench.common.face_embeddings``: ``--vectors`` unit vectors, 10 per
identity) and asked the same mated probes (new images of enrolled identities) for ``--k``
neighbours at the default nprobe, one faiss thread; with ``--real FILE.npz``, over real face
descriptors (e.g. dlib-resnet's of celeba_wild), each face searching the others:

* microseconds per probe, one probe a call and 8 a call (medians of ``--repeats``, the two
  kinds in turns so that both see the same machine load);
* against an exact search (``IndexFlat``): the nearest vector found, the nearest identity
  found, and the largest error of the nearest distance (what a ``best`` template thresholds);
* the time to remove 5 vectors and to add them back (an index version's update), and build time.

    python bench/bench_fastscan.py --vectors 1000000 --threads 1
    python bench/bench_fastscan.py --real faces.npz --k 5 --threads 1
    python bench/bench_fastscan.py --smoke
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    base_parser,
    face_embeddings,
    print_header,
    start_record,
    write_result,
)

NAME = "bench_fastscan"
KINDS = ("ivf", "ivf-fastscan")


def per_probe_us(index: Any, probes: np.ndarray, k: int, batch: int) -> float:
    start = time.perf_counter()
    for lo in range(0, len(probes) - batch + 1, batch):
        index.search(probes[lo : lo + batch], k)
    return (time.perf_counter() - start) / (len(probes) // batch * batch) * 1e6


def real_faces(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Face descriptors and each one's person (its photo's), from an .npz of ``vectors``,
    ``start`` and ``names``."""
    z = np.load(path)
    vectors = np.ascontiguousarray(z["vectors"], dtype=np.float32)
    start = z["start"]  # with or without the end offset (EmbeddedSet.face_start has it)
    counts = np.diff(start if start[-1] == len(vectors) else np.append(start, len(vectors)))
    people = np.unique(z["names"], return_inverse=True)[1]
    return vectors, np.repeat(people, counts)


def nearest_other(
    dist: np.ndarray, ids: np.ndarray, own: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first neighbour that is not the probe itself (``own``; -1: none is)."""
    first = np.where(ids[:, 0] == own, 1, 0)
    rows = np.arange(len(ids))
    return dist[rows, first], ids[rows, first]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__ or NAME)
    p.add_argument("--vectors", type=int, default=1_000_000, help="gallery size (default 1M)")
    p.add_argument("--dim", type=int, default=64, help="dimension (default 64, bench_api's)")
    p.add_argument("--metric", default="l2", choices=("l2", "cosine"))
    p.add_argument("--probes", type=int, default=1000, help="mated probes (default 1000)")
    p.add_argument("--k", type=int, default=50, help="neighbours (default 50, search_k)")
    p.add_argument(
        "--real",
        type=Path,
        default=None,
        help="real descriptors instead: an .npz of 'vectors' (one row a face), 'start' (each "
        "photo's first row; the end may follow) and 'names' (each photo's person); every "
        "face searches the others",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.vectors, args.probes, args.repeats = 20_000, 100, 1
    record = start_record(NAME, args)
    print_header(record)
    import faiss

    from index import VectorIndex, choose_factory

    if args.real is not None:
        vectors, labels = real_faces(args.real)
        probes = vectors  # every face searches the others
    else:
        data = face_embeddings(args.vectors, dim=args.dim, per_identity=10, seed=args.seed)
        vectors, labels = data.vectors, np.arange(data.n) // data.per_identity
        probes, _ = data.probes(args.probes, seed=args.seed)
    n, dim = vectors.shape
    ids = np.arange(n, dtype=np.int64) * 3 + 7  # database ids are not positions
    probes = np.ascontiguousarray(probes, dtype=np.float32)
    own = ids if args.real is not None else np.full(len(probes), -1, np.int64)

    def as_searched(x: np.ndarray) -> np.ndarray:  # cosine: on the unit sphere, as VectorIndex
        if args.metric == "cosine":
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return np.ascontiguousarray(x, dtype=np.float32)

    exact = faiss.IndexFlat(dim, faiss.METRIC_L2)
    exact.add(as_searched(vectors))
    exact_d, exact_i = exact.search(as_searched(probes), 2)
    exact_d = np.sqrt(np.maximum(exact_d, 0))
    if args.metric == "cosine":  # unit vectors: 1 - cos = |a - b|^2 / 2
        exact_d = exact_d**2 / 2
    true_d, true_ids = nearest_other(exact_d, ids[exact_i], own)
    label_of = dict(zip(ids.tolist(), labels.tolist(), strict=True))

    built: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        factory = choose_factory(n, dim, kind, args.metric)
        start = time.perf_counter()
        index = VectorIndex.create(factory, dim, args.metric)
        index.train(vectors, seed=args.seed)
        index.add(vectors, ids)
        build = time.perf_counter() - start
        dist, found = nearest_other(*index.search(probes, args.k + 1), own)
        start = time.perf_counter()
        index.remove(ids[:5])
        removed_s = time.perf_counter() - start
        start = time.perf_counter()
        index.add(vectors[:5], ids[:5])
        added_s = time.perf_counter() - start
        built[kind] = index
        same_label = [
            label_of.get(int(a)) == label_of[int(b)] for a, b in zip(found, true_ids, strict=True)
        ]
        rows.append(
            {
                "kind": kind,
                "factory": index.factory,
                "info": index.info(),
                "build_s": build,
                "remove_5_s": removed_s,
                "add_5_s": added_s,
                "nearest_vector": float(np.mean(found == true_ids)),
                "nearest_identity": float(np.mean(same_label)),
                "nearest_distance_error_max": float(np.abs(dist - true_d).max()),
            }
        )
    for batch in (1, 8):
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for rep in range(args.repeats):
            for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
                times[kind].append(per_probe_us(built[kind], probes, args.k, batch))
        for row in rows:
            row[f"us_per_probe_batch{batch}"] = float(np.median(times[row["kind"]]))
    for row in rows:
        print(
            f"{row['factory']:34s} {row['us_per_probe_batch1']:6.0f} us/probe (1 a call), "
            f"{row['us_per_probe_batch8']:6.0f} (8 a call); nearest vector "
            f"{row['nearest_vector']:.3f}, identity {row['nearest_identity']:.3f}, "
            f"|d| error max {row['nearest_distance_error_max']:.4f}; build "
            f"{row['build_s']:.1f} s, remove 5 {row['remove_5_s'] * 1e3:.0f} ms, add 5 "
            f"{row['add_5_s'] * 1e3:.0f} ms",
            flush=True,
        )
    ratio = rows[1]["us_per_probe_batch1"] / rows[0]["us_per_probe_batch1"]
    print(f"fast-scan / flat lists, per probe one a call: {ratio:.2f}x")
    record.update(rows=rows, vectors=n, dim=dim, metric=args.metric, k=args.k)
    record["data"] = str(args.real) if args.real is not None else "synthetic"
    path = write_result(NAME, record, args.out)
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
