"""Incremental embedding benchmark: re-running ``embed`` on an unchanged gallery vs. a full embed.

A synthetic gallery is imported into a throwaway SIAMID_HOME (SQLite) with a 1-epoch model
(as in ``bench_embedding.py``). Each repeat times, in this order:

1. **full**: ``index_pending(full=True)``: every image embedded again, the index rebuilt;
2. **unchanged**: ``index_pending()`` right after: it must embed 0 images and keep the
   published index (no rebuild, nothing published); the goal is <= 2% of the full time;
3. **one new person**: one more identity (``--per-identity`` images) is imported, then
   ``index_pending()`` embeds just those and adds them to a copy of the published index.

Before each timed call the in-process encoder cache is emptied, so every run loads and
verifies the checkpoint like a fresh ``siamid embed`` process (interpreter start-up and
imports are not counted). Medians over ``--repeats``; the ratios are per repeat, then median.

    python bench/bench_incremental.py               # 5,000 images
    python bench/bench_incremental.py --identities 100 --per-identity 20
    python bench/bench_incremental.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Column,
    GalleryEnv,
    base_parser,
    format_table,
    median,
    prepare_gallery,
    print_header,
    start_record,
    write_result,
)
from pipelines.services.indexing import index_pending  # noqa: E402

NAME = "bench_incremental"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = base_parser(__doc__ or NAME)
    p.add_argument(
        "--members",
        type=int,
        default=None,
        help="ensemble members of the model (default: TrainConfig's, 3)",
    )
    p.add_argument("--identities", type=int, default=250, help="synthetic people (default: 250)")
    p.add_argument(
        "--per-identity",
        type=int,
        default=20,
        help="images per person (default: 20; 250 x 20 = 5,000 images)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="embed batch size (default: 256)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="DataLoader workers of the embed runs (default: 1, embed's default)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="gallery and SIAMID_HOME folder (default: a temporary folder)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.identities, args.per_identity, args.batch_size, args.repeats = 6, 4, 8, 1
    return args


def timed_embed(env: GalleryEnv, args: argparse.Namespace, *, full: bool) -> dict[str, Any]:
    """One embed (``index_pending``) as a fresh process would run it: seconds and what it did."""
    env.rt.encoders.clear()  # load and verify the checkpoint again, as a new process does
    t0 = time.perf_counter()
    run = index_pending(
        env.rt, env.model_name, full=full, workers=args.workers, batch_size=args.batch_size
    )
    embedded, skipped, failed, index = run.embedded, run.skipped, run.failed, run.index
    return {
        "seconds": time.perf_counter() - t0,
        "embedded": embedded,
        "skipped": skipped,
        "failed": len(failed),
        "rebuilt": index.rebuilt,
        "published": index.published,
        "vectors": index.vectors,
        "factory": index.factory,
    }


def add_person(env: GalleryEnv, identity: int, per_identity: int, seed: int) -> int:
    """Render and import one more synthetic person; returns the images imported."""
    from pipelines.services.gallery import import_items, scan_image_folder
    from siamese.synthetic import generate_gallery, identity_name

    generate_gallery(
        env.root, identities=1, per_identity=per_identity, seed=seed, first_identity=identity
    )
    items = [it for it in scan_image_folder(env.root) if it.identity == identity_name(identity)]
    return import_items(items, sessions=env.rt.sessions, limits=env.rt.limits).new


def check(run: dict[str, Any], *, embedded: int, rebuilt: bool, published: bool) -> None:
    got = (run["embedded"], run["rebuilt"], run["published"])
    if got != (embedded, rebuilt, published) or run["failed"]:
        raise RuntimeError(
            f"embed did {run}, expected embedded={embedded} rebuilt={rebuilt} published={published}"
        )


def measure(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = prepare_gallery(
        workdir,
        identities=args.identities,
        per_identity=args.per_identity,
        seed=args.seed,
        members=args.members,
    )
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        full = timed_embed(env, args, full=True)
        check(full, embedded=full["vectors"], rebuilt=True, published=True)
        unchanged = timed_embed(env, args, full=False)
        check(unchanged, embedded=0, rebuilt=False, published=False)
        added = add_person(env, args.identities + repeat, args.per_identity, args.seed)
        new_person = timed_embed(env, args, full=False)
        check(new_person, embedded=added, rebuilt=False, published=True)
        runs.append(
            {
                "images": full["vectors"],
                "full": full,
                "unchanged": unchanged,
                "new_person": new_person,
                "unchanged_ratio": unchanged["seconds"] / full["seconds"],
                "new_person_ratio": new_person["seconds"] / full["seconds"],
            }
        )
    return {
        "images": runs[0]["images"],
        "full_seconds": median([r["full"]["seconds"] for r in runs]),
        "unchanged_seconds": median([r["unchanged"]["seconds"] for r in runs]),
        "new_person_seconds": median([r["new_person"]["seconds"] for r in runs]),
        "new_person_images": args.per_identity,
        "unchanged_ratio": median([r["unchanged_ratio"] for r in runs]),
        "new_person_ratio": median([r["new_person_ratio"] for r in runs]),
        "factory": runs[-1]["full"]["factory"],
        "runs": runs,
    }


COLUMNS = (
    Column("what", "run"),
    Column("embedded", "embedded"),
    Column("seconds", "wall s (median)", ".3f"),
    Column("ratio", "vs full", ".2%"),
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    record = start_record(NAME, args)
    print_header(record)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-incremental-"))
        )
        record["result"] = r = measure(workdir, args)
    print(
        f"{r['images']:,} images ({r['factory']}), workers={args.workers}, "
        f"median of {args.repeats} repeat(s)"
    )
    print(
        format_table(
            [
                {
                    "what": "full embed (full=True)",
                    "embedded": r["images"],
                    "seconds": r["full_seconds"],
                    "ratio": 1.0,
                },
                {
                    "what": "unchanged re-embed",
                    "embedded": 0,
                    "seconds": r["unchanged_seconds"],
                    "ratio": r["unchanged_ratio"],
                },
                {
                    "what": "one new person",
                    "embedded": r["new_person_images"],
                    "seconds": r["new_person_seconds"],
                    "ratio": r["new_person_ratio"],
                },
            ],
            COLUMNS,
        )
    )
    path = write_result(NAME, record, args.out)
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
