"""Face detection over celeba_wild: speed, how many faces per photo, how many are too small.

Runs ``faces.Detector`` (dlib HOG + 5-point landmarks, and dlib's CNN detector on the photos HOG
finds no face in, as the service layer builds it; ``--no-cnn``: HOG alone) on every photo of
``../shared/datasets/celeba_wild`` (251 people, 5,420 in-the-wild photos, longer side 400 px),
decoded as the service layer decodes uploads (Pillow, EXIF orientation applied, RGB). Reports:

- speed: images/s and p50/p95 ms per image of ``detect`` alone (decoding is timed apart),
  on one thread (dlib's HOG is single-threaded; numpy's BLAS is pinned to 1 thread too);
- photos with no face, one face, several faces; photos whose faces the CNN fallback found, and
  the time per photo of those (HOG's search plus the CNN's);
- faces whose outer eye corners are less than ``MIN_EYE_SPAN`` px apart (too small to align),
  and the eye-span distribution with what other thresholds would set aside;
- optionally (``--chip-parity N``): mean absolute pixel difference between
  ``faces.align.dlib_chip`` and ``dlib.get_face_chip`` on the first face of N photos, given
  the same (whole-pixel) landmarks.

Prints a markdown table; writes JSON to ``bench/results/bench_detect-<time>.json`` (or
``--out``). Torch-free. Run from the repository root::

    python bench/bench_detect.py                  # the full set (a few minutes)
    python bench/bench_detect.py --limit 200      # a seeded sample of 200 photos
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.one_thread import DATASETS  # noqa: E402

# one_thread first: it pins the threads before numpy loads
# isort: split
import argparse  # noqa: E402
import importlib.util  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from bench.common import cpu_model, memory_total_bytes, percentiles, write_result  # noqa: E402
from faces import MIN_EYE_SPAN, Face, is_too_small  # noqa: E402
from faces.detect import Detector  # noqa: E402

NAME = "bench_detect"
DEFAULT_DATA = DATASETS / "celeba_wild"
SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
CNN_FACE_DETECTOR = "mmod_human_face_detector.dat"
#: Eye-span thresholds whose losses are reported beside MIN_EYE_SPAN, to justify its value.
SPAN_THRESHOLDS = (16.0, 20.0, 25.0, 30.0, 40.0)

logger = logging.getLogger(NAME)


def find_model(name: str) -> Path:
    """One of dlib's models from the face_recognition_models package, found without importing
    it (its ``__init__`` needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise SystemExit(f"error: {name} not found; pip install face-recognition-models")


def list_photos(data: Path, limit: int | None, seed: int) -> list[Path]:
    """The ImageFolder's photos (``<person>/<file>.jpg``), sorted; a seeded sample if limited."""
    if not data.is_dir():
        raise SystemExit(f"error: no data set at {data}; pass --data")
    photos = sorted(p for p in data.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not photos:
        raise SystemExit(f"error: no <person>/<file>.jpg photos under {data}")
    return sample(photos, limit, seed)


def att_portraits(limit: int | None, seed: int) -> list[Path]:
    """The AT&T portraits (``s<N>/<file>.pgm``), sorted; a seeded sample if limited."""
    root = DATASETS / "att_faces"
    paths = sorted(root.glob("s*/*.pgm"))
    if not paths:
        raise SystemExit(f"error: no AT&T portraits under {root}")
    return sample(paths, limit, seed)


def sample(paths: list[Path], limit: int | None, seed: int) -> list[Path]:
    """``limit`` of the sorted ``paths``, drawn with ``seed`` and sorted again (all: no limit)."""
    if limit is not None and limit < len(paths):
        return sorted(random.Random(seed).sample(paths, limit))
    return paths


def decode(path: Path) -> np.ndarray:
    """A photo as the service decodes it: EXIF orientation applied, RGB, uint8."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def chip_parity(detector: Detector, photos: list[Path], n: int) -> dict[str, Any]:
    """Mean |dlib_chip - dlib.get_face_chip| over the first face of up to ``n`` photos."""
    import dlib

    from faces.align import dlib_chip

    diffs: list[float] = []
    exact = 0
    for path in photos:
        if len(diffs) >= n:
            break
        image = decode(path)
        found = detector.detect(image)
        if not found:
            continue
        points = np.rint(found[0].landmarks)  # dlib's own shapes hold whole pixels
        shape = dlib.full_object_detection(
            dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in points]
        )
        reference = dlib.get_face_chip(image, shape, 150, 0.25)
        ours = dlib_chip(image, Face(found[0].box, points, found[0].score), 150, 0.25)
        diff = np.abs(reference.astype(np.int16) - ours.astype(np.int16))
        diffs.append(float(diff.mean()))
        exact += int(not diff.any())
    return {
        "chips": len(diffs),
        "mean_abs_diff": float(np.mean(diffs)) if diffs else None,
        "max_mean_abs_diff": float(np.max(diffs)) if diffs else None,
        "identical_chips": exact,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    photos = list_photos(args.data, args.limit, args.seed)
    detector = Detector(
        args.shape_predictor or find_model(SHAPE_PREDICTOR_5),
        cnn_path=None if args.no_cnn else find_model(CNN_FACE_DETECTOR),
    )
    record: dict[str, Any] = {
        "benchmark": NAME,
        "data": str(args.data),
        "photos": len(photos),
        "options": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"
        },
        "detector": {"name": detector.name, "version": detector.version},
        "min_eye_span": args.min_eye_span,
        "hardware": {
            "cpu_model": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "memory_bytes": memory_total_bytes(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "dlib": __import__("dlib").__version__,
            "threads": 1,
            # Other processes' load distorts the timings on a shared machine: recorded at the
            # start and the end of the run.
            "loadavg_1min_start": os.getloadavg()[0],
        },
    }
    detector.detect(decode(photos[0]))  # warm-up: first-call allocations are not the photos'
    detect_s: list[float] = []
    decode_s = 0.0
    per_photo = {"none": 0, "one": 0, "several": 0, "found_by_cnn": 0}
    cnn_s: list[float] = []  # photos HOG found nothing in (the CNN ran, when on)
    spans: list[float] = []
    too_small = 0
    photos_all_small = 0
    for i, path in enumerate(photos, 1):
        t0 = time.perf_counter()
        image = decode(path)
        t1 = time.perf_counter()
        found = detector.detect(image)
        detect_s.append(time.perf_counter() - t1)
        decode_s += t1 - t0
        per_photo["none" if not found else "one" if len(found) == 1 else "several"] += 1
        by_cnn = bool(found) and found[0].found_by == "cnn"
        per_photo["found_by_cnn"] += by_cnn
        if by_cnn or (not found and not args.no_cnn):
            cnn_s.append(detect_s[-1])
        spans += [f.eye_span for f in found]
        small = sum(is_too_small(f, args.min_eye_span) for f in found)
        too_small += small
        photos_all_small += bool(found) and small == len(found)
        if args.progress and i % 500 == 0:
            print(f"  {i}/{len(photos)} photos", file=sys.stderr, flush=True)
    record["hardware"]["loadavg_1min_end"] = os.getloadavg()[0]
    total_detect = sum(detect_s)
    arr = np.asarray(spans)
    record["speed"] = {
        "images_per_s": len(photos) / total_detect,
        "images_per_s_with_decode": len(photos) / (total_detect + decode_s),
        **{f"{k}_ms": v for k, v in percentiles(detect_s, (50, 95, 99)).items()},
        "mean_ms": 1e3 * total_detect / len(photos),
        "decode_mean_ms": 1e3 * decode_s / len(photos),
        "photos_the_cnn_ran_on": len(cnn_s),
        "cnn_photo_p50_ms": percentiles(cnn_s, (50,))["p50"] if cnn_s else None,
    }
    record["photos_by_faces"] = per_photo
    record["faces"] = {
        "total": len(spans),
        "below_min_eye_span": too_small,
        "photos_whose_faces_are_all_too_small": photos_all_small,
        "eye_span_px_percentiles": (
            {f"p{q}": float(np.percentile(arr, q)) for q in (1, 5, 25, 50, 75, 95)}
            if len(arr)
            else {}
        ),
        "below_threshold": {f"{t:g}": int((arr < t).sum()) for t in SPAN_THRESHOLDS},
    }
    if args.chip_parity:
        record["chip_parity"] = chip_parity(detector, photos, args.chip_parity)
    return record


def markdown(record: dict[str, Any]) -> str:
    s, p, f, hw = record["speed"], record["photos_by_faces"], record["faces"], record["hardware"]
    rows = [
        ("photos", f"{record['photos']}"),
        ("images/s (detect)", f"{s['images_per_s']:.1f}"),
        ("p50 / p95 ms per image", f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f}"),
        ("decode ms per image (mean)", f"{s['decode_mean_ms']:.1f}"),
        ("photos with no face", f"{p['none']}"),
        ("photos with one face", f"{p['one']}"),
        ("photos with several faces", f"{p['several']}"),
        ("photos whose faces the CNN fallback found", f"{p['found_by_cnn']}"),
        (
            "photos the CNN ran on, p50 ms per image (HOG + CNN)",
            f"{s['photos_the_cnn_ran_on']}, {s['cnn_photo_p50_ms'] or float('nan'):.0f}",
        ),
        ("faces", f"{f['total']}"),
        (f"faces below MIN_EYE_SPAN ({record['min_eye_span']:g} px)", f"{f['below_min_eye_span']}"),
        (
            "eye span p5 / p50 / p95 px",
            " / ".join(
                f"{f['eye_span_px_percentiles'].get(k, float('nan')):.1f}"
                for k in ("p5", "p50", "p95")
            ),
        ),
        (
            "faces below 16/20/25/30/40 px",
            " / ".join(str(v) for v in f["below_threshold"].values()),
        ),
    ]
    if "chip_parity" in record:
        c = record["chip_parity"]
        if c["mean_abs_diff"] is not None:
            rows.append(
                (
                    f"dlib_chip vs dlib.get_face_chip, mean abs diff ({c['chips']} chips)",
                    f"{c['mean_abs_diff']:.4f} ({c['identical_chips']} identical)",
                )
            )
    rows.append(
        (
            "machine",
            f"{hw['cpu_model']}, {hw['cpus_usable']} usable CPUs, 1 thread; load average "
            f"{hw['loadavg_1min_start']:.1f} at start, {hw['loadavg_1min_end']:.1f} at end",
        )
    )
    rows.append(("detector", f"{record['detector']['name']} {record['detector']['version']}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"| {'-' * width} | ----- |"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="ImageFolder of photos (default: ../shared/datasets/celeba_wild)",
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="a seeded sample of N photos instead of all of them"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    ap.add_argument(
        "--min-eye-span",
        type=float,
        default=MIN_EYE_SPAN,
        help=f"too-small threshold in px (default: MIN_EYE_SPAN = {MIN_EYE_SPAN:g})",
    )
    ap.add_argument(
        "--chip-parity",
        type=int,
        default=0,
        metavar="N",
        help="also compare dlib_chip with dlib.get_face_chip on N photos",
    )
    ap.add_argument(
        "--shape-predictor",
        type=Path,
        default=None,
        help="path of shape_predictor_5_face_landmarks.dat (default: from face_recognition_models)",
    )
    ap.add_argument(
        "--no-cnn", action="store_true", help="HOG alone: no CNN fallback for photos without a face"
    )
    ap.add_argument("--progress", action="store_true", help="print progress to stderr")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="8 photos and 2 chips, in seconds (CI); overrides --limit/--chip-parity",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON result path (default: bench/results/bench_detect-<time>.json)",
    )
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.smoke:
        args.limit, args.chip_parity = 8, 2
    if args.limit is not None and args.limit < 1:
        raise SystemExit("error: --limit must be >= 1")
    record = run(args)
    print(markdown(record))
    path = write_result(NAME, record, args.out)
    print(f"\nwrote {path}")
    return record


if __name__ == "__main__":
    main()
