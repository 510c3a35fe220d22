"""Embedding with the dlib-resnet backbone: the embed pipeline's images/s against the raw forward.

Real photos (the first ``--photos`` of ``--data``, default ``../shared/datasets/celeba_wild``)
are imported into a throwaway SIAMID_HOME with their faces detected (detection happens at import,
so it is not part of embedding), and the pretrained network is registered zero-shot. Then, in one
run and interleaved over ``--repeats``:

* **pipeline**: the embed flow's steps (``index_pending(full=True)``) per DataLoader worker count in
  ``--workers``: read + sha256 check + decode + dlib chip in the loader, the forward pass (affine
  layers folded into the convolutions, channels_last), the shard, the SQL rows, the index;
* **raw forward**: the same folded network on the same chips, already cut and stacked, in
  batches of ``--batch-size``.

The goal figure is pipeline / raw >= 0.9 (median of the per-repeat ratios).

    python bench/bench_embed_pretrained.py --threads 1 --photos 400
    python bench/bench_embed_pretrained.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    base_parser,
    median,
    open_bench_runtime,
    print_header,
    start_record,
    stopwatch,
    write_result,
)
from pipelines.services.indexing import index_pending  # noqa: E402

NAME = "bench_embed_pretrained"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "celeba_wild"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = base_parser(__doc__ or NAME)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an ImageFolder of photos")
    p.add_argument("--photos", type=int, default=400, help="photos to import (default: 400)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--workers", default="0,1", help="DataLoader worker counts (default: 0,1)")
    args = p.parse_args(argv)
    if args.smoke:
        args.photos, args.repeats, args.workers, args.batch_size = 16, 1, "0", 8
    return args


def _gallery(data: Path, photos: int, workdir: Path) -> Path:
    """The first ``photos`` photos of ``data`` linked into an ImageFolder of their own."""
    root = workdir / "photos"
    people = sorted(p for p in data.iterdir() if p.is_dir())
    taken = 0
    for person in people:
        for photo in sorted(person.iterdir()):
            if taken >= photos:
                return root
            link = root / person.name / photo.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(photo.resolve())
            taken += 1
    return root


def measure(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pipelines.services.crops import crop
    from pipelines.services.detection import chosen_gallery_faces, read_photo
    from pipelines.services.detection_chunks import detect_gallery
    from pipelines.services.gallery import import_items, scan_image_folder
    from pipelines.services.training import TrainOptions, train_model, training_set
    from siamese.data import preprocess

    rt = open_bench_runtime(workdir / "home", threads=args.threads)
    import_items(scan_image_folder(_gallery(args.data, args.photos, workdir)), sessions=rt.sessions)
    detect_gallery(rt)
    options = TrainOptions(backbone="dlib-resnet", epochs=0)
    model = train_model(rt, training_set(rt, None, options.crop()), options)
    first = index_pending(rt, model.name, full=True, workers=0)  # loads and folds the network
    n = first.embedded
    encoder = rt.encoders.get(first.model)
    faces = chosen_gallery_faces(rt)
    with rt.sessions() as s:
        from storage.images import labelled_images

        sources = {i: src for i, src, _ in labelled_images(session=s)}
    chips = torch.stack(
        [
            preprocess(crop(read_photo(sources[i], rt.limits), f, first.model.crop), encoder.config)
            for i, f in sorted(faces.items())
        ]
    ).contiguous(memory_format=torch.channels_last)
    workers = [int(w) for w in args.workers.split(",")]
    raw_runs: list[float] = []
    pipe_runs: dict[int, list[float]] = {w: [] for w in workers}
    ratios: dict[int, list[float]] = {w: [] for w in workers}
    for _ in range(args.repeats):
        for w in workers:
            with stopwatch() as raw, torch.inference_mode():
                for start in range(0, len(chips), args.batch_size):
                    encoder.module(chips[start : start + args.batch_size]).numpy()
            with stopwatch() as pipe:
                run = index_pending(
                    rt, model.name, full=True, workers=w, batch_size=args.batch_size
                )
            assert run.embedded == n, run
            raw_runs.append(len(chips) / raw.wall)
            pipe_runs[w].append(n / pipe.wall)
            ratios[w].append((n / pipe.wall) / (len(chips) / raw.wall))
    return {
        "photos": args.photos,
        "embedded": n,
        "batch_size": args.batch_size,
        "raw_images_per_s": median(raw_runs),
        "pipeline": {
            w: {
                "images_per_s": median(pipe_runs[w]),
                "pipeline_over_raw": median(ratios[w]),
                "samples": ratios[w],
            }
            for w in workers
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    record = start_record(NAME, args)
    print_header(record)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pre-")))
        record["result"] = result = measure(workdir, args)
    print(f"{result['embedded']} faces embedded, raw forward {result['raw_images_per_s']:.1f}/s")
    print("| DataLoader workers | pipeline images/s | pipeline / raw |")
    print("| --- | --- | --- |")
    for w, row in result["pipeline"].items():
        print(f"| {w} | {row['images_per_s']:.1f} | {row['pipeline_over_raw']:.2f} |")
    print(f"wrote {write_result(NAME, record, args.out)}")
    return record


if __name__ == "__main__":
    main()
