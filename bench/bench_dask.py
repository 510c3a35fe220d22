"""Dask benchmark: embedding images/s in one process and on N Dask workers, and the central costs.

1. **Embedding rate.** A synthetic gallery (``--images``, 92x112 PNG faces) and a 1-epoch model
   of the default configuration; the ``embed`` flow with ``full=True`` run in-process (chunks
   one after the other, decoding in the same process) and on a ``distributed.LocalCluster`` of
   N worker processes with one thread each (``--workers 1,2``), created once per N and warmed
   up by one untimed run (worker start, imports, model load). The rate is images embedded over
   the flow's chunk phase (``EmbedSummary.embed_seconds``: from the first chunk submitted to the
   last result), medians of ``--repeats``; efficiency = rate(N) / (N x rate(1 worker)).
2. **Central SQL costs** at ``--sql-rows`` gallery images (SQLite, and PostgreSQL with
   ``--postgres-url``): listing the pending images at once and as the flow reads them (a count,
   then keyset pages of 2,048), inserting ``embedding`` rows in transactions of 2,048 rows as
   a chunk does (``storage.embeddings.add_embeddings``; and, for comparison, one Core
   ``executemany`` per transaction on a plain connection), the re-check with nothing left,
   reading the live (id, vector ref) pairs the index is built from.
3. **Index build** (train + add) at ``--index-size`` synthetic 128-d face embeddings for the
   auto factory and IVF-PQ (``choose_factory(n, 128, kind)``), faiss at ``--threads``.

    python bench/bench_dask.py                    # ~6,000 images, SQL at 200k rows, index at 1M
    python bench/bench_dask.py --postgres-url postgresql+psycopg://USER@127.0.0.1:PORT/postgres
    python bench/bench_dask.py --smoke            # a minute
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Column,
    base_parser,
    face_embeddings,
    format_table,
    median,
    open_bench_runtime,
    postgres_admin_url,
    prepare_gallery,
    print_header,
    start_record,
    temporary_postgres_database,
    write_result,
)

ROW_CHUNK = 2048  # embedding rows per transaction, as one chunk of the flow commits them


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__ or "")
    parser.set_defaults(threads=1, repeats=2)
    parser.add_argument("--images", type=int, default=6000, help="gallery images (x10 people)")
    parser.add_argument("--chunk-size", type=int, default=500, help="images per chunk task")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--workers", default="1,2", help="Dask worker counts, comma-separated")
    parser.add_argument("--sql-rows", type=int, default=200_000, help="images for the SQL costs")
    parser.add_argument("--index-size", type=int, default=1_000_000, help="vectors to index")
    parser.add_argument("--index-kinds", default="auto,ivfpq", help="choose_factory kinds")
    parser.add_argument("--postgres-url", default=None, help="admin URL of a PostgreSQL server")
    parser.add_argument(
        "--parts", default="embed,sql,index", help="what to measure: embed, sql, index"
    )
    args = parser.parse_args()
    if args.smoke:
        args.images, args.chunk_size, args.repeats = 400, 100, 1
        args.sql_rows, args.index_size = 5000, 60_000
    return args


# ------------------------------------------------------------------ 1. embedding rate


def embed_rates(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    import dask.config
    import distributed

    from pipelines.cluster import WORKER_CONFIG, ClusterSpec, flow_on
    from pipelines.flows.embed import embed_flow

    env = prepare_gallery(
        workdir, identities=max(args.images // 10, 4), per_identity=10, seed=args.seed
    )
    # The flow and the workers read their settings from the environment, like `siamid embed`.
    os.environ["SIAMID_HOME"] = str(env.rt.settings.home_dir)
    os.environ.pop("SIAMID_DATABASE_URL", None)
    os.environ["SIAMID_TORCH_THREADS"] = str(args.threads)
    kwargs = {
        "model": env.model_name,
        "full": True,
        "batch_size": args.batch_size,
        "workers": 0,
        "chunk_size": args.chunk_size,
    }

    def measure(run: Any) -> dict[str, Any]:
        run(**kwargs)  # warm-up: model load, imports, page cache
        rates, walls = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = run(**kwargs)
            walls.append(time.perf_counter() - t0)
            assert out.embedded == env.images and not out.failed_chunks, out
            rates.append(out.embedded / out.embed_seconds)
        return {"images": env.images, "rate": median(rates), "rates": rates, "wall": median(walls)}

    rows = [{"setup": "in-process (1 thread)", "n": 0, **measure(embed_flow)}]
    print(f"in-process: {rows[0]['rate']:.0f} images/s", flush=True)
    for n in [int(w) for w in args.workers.split(",")]:
        # the workers `siamid embed --dask-workers N` starts (WORKER_CONFIG: glibc's malloc)
        with (
            dask.config.set(WORKER_CONFIG),
            distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
        ):
            with flow_on(embed_flow, ClusterSpec(address=cluster.scheduler_address)) as run:
                row = {"setup": f"Dask, {n} worker(s) x 1 thread", "n": n, **measure(run)}
        rows.append(row)
        print(f"{n} worker(s): {row['rate']:.0f} images/s", flush=True)
    one = next((r["rate"] for r in rows if r["n"] == 1), None)
    for r in rows:
        if r["n"] and one:
            r["efficiency"] = r["rate"] / (r["n"] * one)
    return rows


# ------------------------------------------------------------------ 2. central SQL costs


def synthetic_model(rt: Any, name: str) -> int:
    """A model version row (SQL costs do not depend on the model); its id."""
    from storage.models import ModelVersion

    with rt.sessions.begin() as s:
        model = ModelVersion(
            name=name,
            architecture="siamese",
            config={},
            checkpoint_path="",
            checkpoint_sha256="0" * 64,
            embedding_dim=128,
            distance="l2",
            margin=1.0,
        )
        s.add(model)
        s.flush()
        return int(model.id)


def synthetic_gallery_rows(rt: Any, n: int) -> int:
    """``n`` accepted images of n/10 people (fake paths) and a model version; its id."""
    from sqlalchemy import insert

    from storage.models import FaceImage, Identity

    model_id = synthetic_model(rt, "bench-sql")
    people = max(n // 10, 1)
    step = 20_000
    with rt.engine.begin() as conn:
        for start in range(0, people, step):
            conn.execute(
                insert(Identity),
                [
                    {"id": i + 1, "name": f"bench-{i}", "attributes": {}}
                    for i in range(start, min(people, start + step))
                ],
            )
        for start in range(0, n, step):
            conn.execute(
                insert(FaceImage),
                [
                    {
                        "identity_id": i % people + 1,
                        "source_uri": f"/gallery/bench-{i % people}/{i:09d}.png",
                        "sha256": f"{i:064x}",
                        "status": "accepted",
                    }
                    for i in range(start, min(n, start + step))
                ],
            )
        # fresh planner statistics, as autovacuum / a nightly ANALYZE would leave them (right
        # after a bulk insert the planner knows nothing of the tables' sizes)
        conn.exec_driver_sql("ANALYZE")
    return model_id


def sql_costs(rt: Any, backend: str, n: int) -> dict[str, Any]:
    from pipelines.services.paging import keyset_pages
    from storage.embeddings import (
        add_embeddings,
        count_images_to_embed,
        images_to_embed,
        live_embeddings,
    )

    model_id = synthetic_gallery_rows(rt, n)
    t0 = time.perf_counter()
    with rt.sessions() as s:
        todo = images_to_embed(session=s, model_version_id=model_id)
    list_s = time.perf_counter() - t0
    assert len(todo) == n, (len(todo), n)

    def read(after_id: int | None, limit: int) -> list[tuple[int, str, str]]:
        with rt.sessions() as s:
            return images_to_embed(
                session=s, model_version_id=model_id, after_id=after_id, limit=limit
            )

    t0 = time.perf_counter()
    with rt.sessions() as s:
        count, last_id = count_images_to_embed(session=s, model_version_id=model_id)
    count_s = time.perf_counter() - t0
    pages = list(keyset_pages(read, ROW_CHUNK, last_id=last_id))
    paged_s = time.perf_counter() - t0
    assert count == n and [row for page in pages for row in page] == todo
    del pages
    rows = [(fid, f"shard-{k // ROW_CHUNK:09d}.npy:{k}") for k, (fid, _, _) in enumerate(todo)]
    t0 = time.perf_counter()
    for start in range(0, n, ROW_CHUNK):
        with rt.sessions.begin() as s:
            add_embeddings(
                session=s, model_version_id=model_id, rows=rows[start : start + ROW_CHUNK]
            )
    insert_s = time.perf_counter() - t0
    # The same rows through one Core executemany per transaction, for comparison (another model
    # version id, so that the unique key lets them in).
    from sqlalchemy import insert

    from storage.models import Embedding

    other = synthetic_model(rt, "bench-sql-core")
    t0 = time.perf_counter()
    for start in range(0, n, ROW_CHUNK):
        with rt.engine.begin() as conn:
            conn.execute(
                insert(Embedding),
                [
                    {"face_image_id": fid, "model_version_id": other, "vector_ref": ref}
                    for fid, ref in rows[start : start + ROW_CHUNK]
                ],
            )
    core_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with rt.sessions() as s:
        left = images_to_embed(session=s, model_version_id=model_id)
    recheck_s = time.perf_counter() - t0
    assert not left
    t0 = time.perf_counter()
    with rt.sessions() as s:
        live = live_embeddings(session=s, model_version_id=model_id)
    live_s = time.perf_counter() - t0
    assert len(live) == n
    return {
        "backend": backend,
        "rows": n,
        "insert_rows_per_s": n / insert_s,
        "core_insert_rows_per_s": n / core_s,
        "list_pending_s": list_s,
        "count_pending_s": count_s,
        "paged_pending_s": paged_s,
        "recheck_s": recheck_s,
        "live_read_s": live_s,
    }


# ------------------------------------------------------------------ 3. index build


def index_builds(args: argparse.Namespace) -> list[dict[str, Any]]:
    import numpy as np

    from index.factory import choose_factory
    from index.vector_index import VectorIndex

    data = face_embeddings(args.index_size, dim=128, seed=args.seed)
    ids = np.arange(data.n, dtype=np.int64)
    out = []
    for kind in args.index_kinds.split(","):
        factory = choose_factory(data.n, data.dim, kind)
        index = VectorIndex.create(factory, data.dim, "l2")
        t0 = time.perf_counter()
        index.train(data.vectors)
        t1 = time.perf_counter()
        index.add(data.vectors, ids)
        t2 = time.perf_counter()
        out.append(
            {
                "kind": kind,
                "factory": index.factory,
                "vectors": data.n,
                "train_s": t1 - t0,
                "add_s": t2 - t1,
                "build_s": t2 - t0,
            }
        )
        print(f"index {index.factory}: {t2 - t0:.1f} s", flush=True)
        del index
    return out


# ------------------------------------------------------------------ main


def main() -> None:
    args = parse_args()
    record = start_record("bench_dask", args)
    print_header(record)
    record["load_average_start"] = os.getloadavg()
    parts = set(args.parts.split(","))
    record["embedding"], record["sql"], record["index"] = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        workdir = Path(tmp)
        if "embed" in parts:
            record["embedding"] = embed_rates(args, workdir)
            record["load_average_after_embedding"] = os.getloadavg()
        if "sql" in parts:
            rt = open_bench_runtime(workdir / "sql-sqlite")
            record["sql"] = [sql_costs(rt, "SQLite", args.sql_rows)]
        admin = postgres_admin_url(args.postgres_url)
        if admin and "sql" in parts:
            with temporary_postgres_database(admin, "bench_dask") as url:
                pg = open_bench_runtime(workdir / "sql-pg", url)
                with contextlib.closing(pg.engine.connect()) as conn:
                    version = conn.exec_driver_sql("SHOW server_version").scalar()
                record["sql"].append(sql_costs(pg, f"PostgreSQL {version}", args.sql_rows))
                pg.engine.dispose()
    if "index" in parts:
        record["index"] = index_builds(args)
    record["load_average_end"] = os.getloadavg()

    print()
    print(
        format_table(
            record["embedding"],
            [
                Column("setup", "embedding run"),
                Column("images", "images"),
                Column("rate", "images/s (median)", ".0f"),
                Column("efficiency", "efficiency", ".2f"),
                Column("wall", "flow wall s", ".1f"),
            ],
        )
    )
    print()
    print(
        format_table(
            record["sql"],
            [
                Column("backend", "database"),
                Column("rows", "images"),
                Column("insert_rows_per_s", "embedding rows/s (add_embeddings)", ",.0f"),
                Column("core_insert_rows_per_s", "rows/s (Core executemany)", ",.0f"),
                Column("list_pending_s", "list pending s", ".2f"),
                Column("count_pending_s", "count pending s", ".2f"),
                Column("paged_pending_s", "count + pages of 2,048 s", ".2f"),
                Column("recheck_s", "re-check (0 left) s", ".2f"),
                Column("live_read_s", "read live refs s", ".2f"),
            ],
        )
    )
    print()
    print(
        format_table(
            record["index"],
            [
                Column("factory", "index"),
                Column("vectors", "vectors", ","),
                Column("train_s", "train s", ".1f"),
                Column("add_s", "add s", ".1f"),
                Column("build_s", "build s", ".1f"),
            ],
        )
    )
    print(f"\nload average: start {record['load_average_start']}, end {record['load_average_end']}")
    print(f"wrote {write_result('bench_dask', record, args.out)}")


if __name__ == "__main__":
    main()
