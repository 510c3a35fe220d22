"""dlib's face ResNet: the torch port (``siamese.dlib_resnet``) against dlib itself, on CPU.

Both compute 128-d descriptors of the same 150x150 RGB chips (seeded noise: the work of a
convolutional network does not depend on the pixel values) from the same
``dlib_face_recognition_resnet_model_v1.dat``:

* **torch folded**: :func:`fold_for_inference` (affine layers folded into the convolutions,
  channels_last weights and inputs), ``embed(chips, batch_size)`` under ``inference_mode``,
  preprocessing included; at each thread count of ``--thread-counts``;
* **torch plain**: the loaded module as is (separate affine layers, NCHW), for reference;
* **dlib**: ``face_recognition_model_v1.compute_face_descriptor(list_of_chips)`` (the batch
  overload for aligned chips, no jitter). dlib's Python API has no thread setting; the
  ``dlib-bin`` wheel is built without BLAS and its CPU DNN code runs on the calling thread,
  which the CPU-time / wall-time column confirms (about 1.0).

Each measurement embeds ``--batches`` batches of ``--batch-size`` chips; the configurations
are interleaved over ``--repeats`` so that load from other processes spreads over all of
them, and images/s is taken from the median wall time (the best repeat is shown too). CPU
seconds per image are reported as well: on a shared machine they move much less than wall
time, and CPU/wall shows how many cores a configuration really used. The largest difference between
torch and dlib descriptors on the benchmark chips is recorded as a sanity check.

    python bench/bench_dlib_resnet.py                  # batch 32, 1 and 2 threads, 5 repeats
    python bench/bench_dlib_resnet.py --batches 4 --repeats 7
    python bench/bench_dlib_resnet.py --smoke
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    base_parser,
    median,
    print_header,
    start_record,
    stopwatch,
    write_result,
)

NAME = "bench_dlib_resnet"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = base_parser(__doc__ or NAME)
    p.set_defaults(repeats=5, threads=1)
    p.add_argument(
        "--thread-counts",
        default="1,2",
        help="torch intra-op thread counts to measure (default: 1,2)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="chips per forward (default: 32)")
    p.add_argument("--batches", type=int, default=2, help="batches per measurement (default: 2)")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="the .dat file (default: face_recognition_models' copy)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.batch_size, args.batches, args.repeats = 4, 1, 1
        args.thread_counts = str(args.threads)
    return args


def chips(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 150])
    return rng.integers(0, 256, (count, 150, 150, 3), dtype=np.uint8)


def measure(fn: Callable[[], Any], images: int) -> dict[str, float]:
    with stopwatch() as t:
        fn()
    return {"wall_s": t.wall, "cpu_s": t.cpu, "images": images}


def summarise(samples: list[dict[str, float]]) -> dict[str, float]:
    images = samples[0]["images"]
    wall = median([s["wall_s"] for s in samples])
    cpu = median([s["cpu_s"] for s in samples])
    return {
        "images_per_s": images / wall,
        "best_images_per_s": images / min(s["wall_s"] for s in samples),
        "ms_per_image": 1e3 * wall / images,
        "cpu_ms_per_image": 1e3 * cpu / images,
        "cpu_over_wall": cpu / wall,
        "wall_s_samples": [s["wall_s"] for s in samples],
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| engine | threads | images/s (median) | images/s (best) | ms/image | CPU ms/image "
        "| CPU/wall | x dlib |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['threads']} | {r['images_per_s']:.1f} | "
            f"{r['best_images_per_s']:.1f} | {r['ms_per_image']:.1f} | "
            f"{r['cpu_ms_per_image']:.1f} | {r['cpu_over_wall']:.2f} | "
            f"{r['speedup_vs_dlib']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = start_record(NAME, args)
    print_header(record)

    import dlib
    import torch

    from siamese.dlib_resnet import fold_for_inference, load_dlib_resnet

    if args.model is None:
        from pipelines.services.model_files import FACE_RESNET, model_file

        args.model = model_file(FACE_RESNET)
    thread_counts = [int(t) for t in str(args.thread_counts).split(",") if t]
    plain = load_dlib_resnet(args.model)
    folded = fold_for_inference(plain)
    recognizer = dlib.face_recognition_model_v1(str(args.model))
    batch = chips(args.batch_size, args.seed)
    images = args.batch_size * args.batches
    chip_list = list(batch)

    def run_torch(model: Any) -> Callable[[], Any]:
        return lambda: [model.embed(batch, batch_size=args.batch_size) for _ in range(args.batches)]

    def run_dlib() -> Any:
        return [recognizer.compute_face_descriptor(chip_list, 0) for _ in range(args.batches)]

    configs: list[tuple[str, int, Callable[[], Any]]] = [("dlib", 1, run_dlib)]
    for threads in thread_counts:
        configs.append(("torch folded channels_last", threads, run_torch(folded)))
        configs.append(("torch plain NCHW", threads, run_torch(plain)))

    # Warm-up (first-call allocations, oneDNN kernel selection) and the parity check.
    torch.set_num_threads(thread_counts[0])
    ours = folded.embed(batch, batch_size=args.batch_size)
    theirs = np.array([np.array(v) for v in recognizer.compute_face_descriptor(chip_list, 0)])
    max_abs_diff = float(np.abs(ours - theirs).max())
    plain.embed(batch[:2])

    samples: dict[tuple[str, int], list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for engine, threads, fn in configs:
            torch.set_num_threads(threads)
            samples.setdefault((engine, threads), []).append(measure(fn, images))
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    torch.set_num_threads(args.threads)

    rows = [
        {"engine": engine, "threads": threads, **summarise(s)}
        for (engine, threads), s in samples.items()
    ]
    dlib_rate = rows[0]["images_per_s"]
    for row in rows:
        row["speedup_vs_dlib"] = row["images_per_s"] / dlib_rate
    record["result"] = {
        "model": str(args.model),
        "batch_size": args.batch_size,
        "images_per_measurement": images,
        "chips": "seeded uniform noise, 150x150 RGB uint8",
        "dlib": {
            "version": dlib.__version__,
            "uses_blas": bool(dlib.DLIB_USE_BLAS),
            "uses_cuda": bool(dlib.DLIB_USE_CUDA),
            "threads": "not settable from Python; runs on the calling thread",
            "call": "compute_face_descriptor(list of 150x150 chips, num_jitters=0)",
        },
        "max_abs_diff_folded_vs_dlib": max_abs_diff,
        "rows": rows,
    }
    print()
    print(markdown_table(rows))
    print(f"\nmax |torch folded - dlib| on these chips: {max_abs_diff:.2e}")
    path = write_result(NAME, record, args.out)
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
