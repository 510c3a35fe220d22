"""The torch port of dlib's CNN face detector against dlib's: parity and speed, one run.

Both detectors get the same pixels: every AT&T portrait (92x112, grey, enlarged 2x with
Pillow's bilinear filter as ``faces.Detector`` enlarges photos under 800 px; their faces are
under the 80 px window at 1x) and a seeded sample of celeba_wild photos (400 px, RGB, EXIF
applied) at their size. For each photo: dlib's ``cnn_face_detection_model_v1(image, 0)`` and
``faces.mmod.MmodDetector.detect([image])``, timed one photo at a time on one thread
(``torch.set_num_threads(1)``, OMP/BLAS pinned to 1), then the port again in batches
(``--batch`` photos per forward).

Parity: a photo is identical within tolerance when both give the same number of faces, each
box within 1 px and each score within 1e-3 (in dlib's order, highest score first); the photos
that differ are listed with both results.

Prints a markdown summary; writes JSON to ``bench/results/bench_mmod-<time>.json``::

    python bench/bench_mmod.py                                 # all AT&T, 300 celeba_wild
    python bench/bench_mmod.py --att-limit 40 --celeba-limit 20  # a quick look
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.one_thread import DATASETS  # noqa: E402

# one_thread first: it pins the threads before numpy loads
# isort: split
import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.bench_detect import att_portraits, decode, find_model, list_photos  # noqa: E402
from bench.common import median, write_result  # noqa: E402

NAME = "bench_mmod"
CNN_FACE_DETECTOR = "mmod_human_face_detector.dat"
BOX_TOLERANCE_PX = 1
SCORE_TOLERANCE = 1e-3


def att_photos(limit: int | None, seed: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for p in att_portraits(limit, seed):
        with Image.open(p) as im:
            im = im.convert("RGB")
            big = im.resize((im.width * 2, im.height * 2), Image.Resampling.BILINEAR)
        out.append((f"att/{p.parent.name}/{p.name}@2x", np.asarray(big)))
    return out


def celeba_photos(limit: int | None, seed: int) -> list[tuple[str, np.ndarray]]:
    root = DATASETS / "celeba_wild"
    return [(f"celeba/{p.parent.name}/{p.name}", decode(p)) for p in list_photos(root, limit, seed)]


def compare(ours: list, theirs: list) -> str | None:
    """None when identical within tolerance, else why not."""
    if len(ours) != len(theirs):
        return f"{len(ours)} faces against dlib's {len(theirs)}"
    for a, (rect, score) in zip(ours, theirs, strict=True):
        off = int(np.abs(np.subtract(a.rect, rect)).max())
        if off > BOX_TOLERANCE_PX:
            return f"box {a.rect} against {rect} ({off} px)"
        if abs(a.score - score) >= SCORE_TOLERANCE:
            return f"score {a.score:.5f} against {score:.5f}"
    return None


def run_set(name: str, photos: list[tuple[str, np.ndarray]], dlib_cnn, port, batch: int) -> dict:
    ours_s: list[float] = []
    dlib_s: list[float] = []
    differ: list[dict[str, Any]] = []
    faces = {"port": 0, "dlib": 0}
    max_box = 0
    max_score = 0.0
    for label, image in photos:
        t0 = time.perf_counter()
        theirs = [
            ((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
            for d in dlib_cnn(image, 0)
        ]
        t1 = time.perf_counter()
        (ours,) = port.detect([image])
        t2 = time.perf_counter()
        dlib_s.append(t1 - t0)
        ours_s.append(t2 - t1)
        faces["port"] += len(ours)
        faces["dlib"] += len(theirs)
        why = compare(ours, theirs)
        if why is None:
            for a, (rect, score) in zip(ours, theirs, strict=True):
                max_box = max(max_box, int(np.abs(np.subtract(a.rect, rect)).max()))
                max_score = max(max_score, abs(a.score - score))
        else:
            differ.append(
                {
                    "photo": label,
                    "why": why,
                    "port": [(d.rect, round(d.score, 5)) for d in ours],
                    "dlib": [(r, round(s, 5)) for r, s in theirs],
                }
            )
    images = [im for _, im in photos]
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        port.detect(images[i : i + batch])
    batched = time.perf_counter() - t0
    n = len(photos)
    return {
        "set": name,
        "photos": n,
        "size": f"{images[0].shape[1]}x{images[0].shape[0]}" if n else None,
        "identical": n - len(differ),
        "identical_share": (n - len(differ)) / n if n else None,
        "max_box_px_when_identical": max_box,
        "max_score_diff_when_identical": max_score,
        "faces": faces,
        "differ": differ,
        "dlib_photos_per_s": n / sum(dlib_s),
        "port_photos_per_s": n / sum(ours_s),
        "port_batched_photos_per_s": n / batched,
        "dlib_median_ms": 1e3 * median(dlib_s),
        "port_median_ms": 1e3 * median(ours_s),
        "speedup_one_at_a_time": sum(dlib_s) / sum(ours_s),
        "speedup_batched": sum(dlib_s) / batched,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--att-limit", type=int, default=None, help="AT&T photos (all: 400)")
    parser.add_argument("--celeba-limit", type=int, default=300, help="celeba_wild sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8, help="photos per detect call, batched run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import dlib
    import torch

    from faces.mmod import MmodDetector

    torch.set_num_threads(1)
    model = find_model(CNN_FACE_DETECTOR)
    dlib_cnn = dlib.cnn_face_detection_model_v1(str(model))
    port = MmodDetector(model)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "dlib": dlib.__version__,
        "torch": torch.__version__,
        "threads": 1,
        "loadavg_start": os.getloadavg(),
    }
    warm = np.zeros((120, 100, 3), np.uint8)
    dlib_cnn(warm, 0), port.detect([warm])
    sets = [
        run_set("AT&T (2x)", att_photos(args.att_limit, args.seed), dlib_cnn, port, args.batch),
        run_set(
            "celeba_wild", celeba_photos(args.celeba_limit, args.seed), dlib_cnn, port, args.batch
        ),
    ]
    record["loadavg_end"] = os.getloadavg()
    record["sets"] = sets
    total = sum(s["photos"] for s in sets)
    same = sum(s["identical"] for s in sets)
    record["identical_share"] = same / total
    path = write_result(NAME, record, args.out)
    print(f"load average {record['loadavg_start']} -> {record['loadavg_end']}, one thread\n")
    print(
        "| set | photos | identical | dlib photos/s | port photos/s | port batched | "
        "speed-up (1 photo / batched) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s in sets:
        print(
            f"| {s['set']} | {s['photos']} | {s['identical']} ({100 * s['identical_share']:.1f}%) "
            f"| {s['dlib_photos_per_s']:.2f} | {s['port_photos_per_s']:.2f} "
            f"| {s['port_batched_photos_per_s']:.2f} "
            f"| {s['speedup_one_at_a_time']:.1f}x / {s['speedup_batched']:.1f}x |"
        )
    print(f"\nall: {same}/{total} identical ({100 * same / total:.2f}%)")
    for s in sets:
        for d in s["differ"]:
            print(f"- {d['photo']}: {d['why']}; port {d['port']}, dlib {d['dlib']}")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
