"""Which face detector by default: faces found against time, per method, in one run.

For celeba_wild (a seeded sample, decoded as the service decodes uploads) and AT&T (every
portrait), runs ``faces.Detector`` with each method of :mod:`faces.methods` - ``hog``,
``cnn`` (dlib's CNN ported to torch) and ``hog+cnn`` (HOG, the CNN on photos HOG finds no face
in) - and, as the baseline, ``hog+cnn`` as it was before the port: the same Detector with
dlib's own ``cnn_face_detection_model_v1`` as the fallback, one photo at a time. Photos are
decoded first (not timed); detection runs ``--batch`` photos per ``detect_many`` call, each
batch through every detector in turn (the load of a shared machine falls on all alike), on one
thread (torch, OMP and BLAS pinned to 1). Reports photos with at least one face, faces, faces
the CNN found, and the mean and median ms per photo.

With ``--workers 0,1,...`` it measures instead how DataLoader workers help the service's
gallery path (:func:`pipelines.services.detection.detect_files`, what ``siamid gallery import``
runs): for ``hog+cnn`` and ``cnn``, the celeba_wild sample read from disk and detected with
each number of workers preparing the photos (decode, HOG, the CNN's pyramids) while the main
process (one torch thread) runs the CNN; every setting in turn, then again in reverse order
(the load drifts). Reports photos/s, the main process's CPU per photo, all CPU per photo
(workers included) and whether the faces are the same as with 0 workers.

Prints a markdown table; writes JSON to ``bench/results/bench_detector_choice-<time>.json``::

    python bench/bench_detector_choice.py                    # 300 celeba_wild, all AT&T
    python bench/bench_detector_choice.py --celeba-limit 50 --att-limit 50
    python bench/bench_detector_choice.py --workers 0,1,2     # DataLoader workers (issue 21)
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
from faces.detect import Detector  # noqa: E402
from faces.methods import DETECTION_METHODS  # noqa: E402
from faces.mmod import MmodDetection  # noqa: E402

NAME = "bench_detector_choice"
BASELINE = "hog+cnn, dlib's CNN (before)"


class DlibCnn:
    """dlib's own CNN behind the interface ``Detector`` calls (``prepare``,
    ``detect_prepared``): the fallback as it ran before the port, one photo at a time."""

    def __init__(self, path: Path) -> None:
        import dlib

        self._net = dlib.cnn_face_detection_model_v1(str(path))
        self.digest = "dlib"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image  # dlib builds its pyramid inside the call

    def detect_prepared(self, images: list[np.ndarray]) -> list[list[MmodDetection]]:
        out = []
        for image in images:
            if image.ndim == 2:
                image = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
            dets = self._net(image, 0)
            out.append(
                [
                    MmodDetection(
                        (d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()),
                        d.confidence,
                    )
                    for d in dets
                ]
            )
        return out


def att_photos(limit: int | None, seed: int) -> list[np.ndarray]:
    out = []
    for p in att_portraits(limit, seed):
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("L")))
    return out


def measure(detectors: dict[str, Detector], photos: list[np.ndarray], batch: int) -> dict:
    """Each detector on each batch in turn (interleaved, so that the machine's changing load
    falls on all of them alike): per method, faces found and time per photo."""
    seconds: dict[str, list[float]] = {m: [] for m in detectors}
    found: dict[str, list] = {m: [] for m in detectors}
    for i in range(0, len(photos), batch):
        chunk = photos[i : i + batch]
        for method, det in detectors.items():
            t0 = time.perf_counter()
            found[method] += det.detect_many(chunk)
            seconds[method] += [(time.perf_counter() - t0) / len(chunk)] * len(chunk)
    n = len(photos)
    out = {}
    for method in detectors:
        with_face = sum(bool(f) for f in found[method])
        out[method] = {
            "photos": n,
            "photos_with_a_face": with_face,
            "share_with_a_face": with_face / n,
            "faces": sum(len(f) for f in found[method]),
            "photos_found_by_cnn": sum(bool(f) and f[0].found_by == "cnn" for f in found[method]),
            "mean_ms": 1e3 * sum(seconds[method]) / n,
            "median_ms": 1e3 * median(seconds[method]),
        }
    return out


def _faces_key(found: list) -> list:
    """What detection found, exactly: outcome, then each face's box, score, landmarks, finder."""
    return [
        (p.outcome, [(f.box, f.score, f.landmarks.tolist(), f.found_by) for f in p.faces])
        for p in found
    ]


def measure_workers(paths: list[Path], counts: list[int], methods: list[str]) -> dict:
    """The service's detect_files with each method and number of workers (see the docstring)."""
    from bench.common import stopwatch
    from pipelines.services import detection
    from siamese.images import DecodeLimits

    limits = DecodeLimits(16, 50_000_000)
    runs = [(m, w) for m in methods for w in counts]
    seconds: dict[tuple[str, int], list[dict[str, float]]] = {r: [] for r in runs}
    faces: dict[tuple[str, int], list] = {}
    for run in [*runs, *reversed(runs)]:
        method, workers = run
        os.environ["SIAMID_DETECTOR"] = method
        detection.detector()  # built before the clock starts (the service keeps it)
        main0 = time.process_time()
        with stopwatch() as t:
            found = list(detection.detect_files(paths, limits, workers=workers))
        main = time.process_time() - main0
        seconds[run].append({"wall": t.wall, "cpu": t.cpu, "main_cpu": main})
        faces.setdefault(run, _faces_key(found))
        print(f"{method} workers={workers}: {seconds[run][-1]}", file=sys.stderr, flush=True)
    n = len(paths)
    out = {}
    for method, workers in runs:
        s = seconds[(method, workers)]
        wall = median([x["wall"] for x in s])
        out[f"{method} / workers={workers}"] = {
            "photos": n,
            "runs": s,
            "photos_per_s": n / wall,
            "main_cpu_ms_per_photo": 1e3 * median([x["main_cpu"] for x in s]) / n,
            "all_cpu_ms_per_photo": 1e3 * median([x["cpu"] for x in s]) / n,
            "photos_with_a_face": sum(
                o != "no_face" and o != "error" for o, _ in faces[(method, workers)]
            ),
            "same_faces_as_0_workers": faces[(method, workers)] == faces[(method, counts[0])],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--celeba-limit", type=int, default=300)
    ap.add_argument("--att-limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8, help="photos per detect_many call")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--workers",
        default=None,
        help="comma-separated DataLoader worker counts: measure the service's detect_files "
        "with each (celeba_wild only) instead of comparing the methods",
    )
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    if args.workers is not None:
        return main_workers(args)
    sp5 = find_model("shape_predictor_5_face_landmarks.dat")
    mmod = find_model("mmod_human_face_detector.dat")
    detectors = {m: Detector(sp5, cnn_path=mmod, method=m) for m in DETECTION_METHODS}
    before = Detector(sp5, cnn_path=mmod, method="hog+cnn")
    before._cnn = DlibCnn(mmod)  # type: ignore[assignment]  # the fallback as it was
    detectors[BASELINE] = before
    sets = {
        "celeba_wild": [
            decode(p) for p in list_photos(DATASETS / "celeba_wild", args.celeba_limit, args.seed)
        ],
        "AT&T": att_photos(args.att_limit, args.seed),
    }
    record: dict[str, Any] = {
        "benchmark": NAME,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": 1,
        "loadavg_start": os.getloadavg(),
        "results": {},
    }
    for det in detectors.values():  # warm-up
        det.detect_many([sets["AT&T"][0], sets["celeba_wild"][0]])
    for set_name, photos in sets.items():
        for method, r in measure(detectors, photos, args.batch).items():
            record["results"][f"{set_name} / {method}"] = r
            print(f"{set_name} / {method}: {r}", file=sys.stderr, flush=True)
    record["loadavg_end"] = os.getloadavg()
    path = write_result(NAME, record, args.out)
    print(f"load average {record['loadavg_start']} -> {record['loadavg_end']}, one thread\n")
    print(
        "| set / detector | photos with a face | faces | found by the CNN | mean ms | median ms |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for key, r in record["results"].items():
        print(
            f"| {key} | {r['photos_with_a_face']}/{r['photos']} "
            f"({100 * r['share_with_a_face']:.1f}%) | {r['faces']} | {r['photos_found_by_cnn']} "
            f"| {r['mean_ms']:.1f} | {r['median_ms']:.1f} |"
        )
    print(f"\nwritten to {path}")
    return 0


def main_workers(args: argparse.Namespace) -> int:
    counts = [int(w) for w in args.workers.split(",")]
    paths = list_photos(DATASETS / "celeba_wild", args.celeba_limit, args.seed)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": 1,
        "loadavg_start": os.getloadavg(),
        "results": measure_workers(paths, counts, ["hog+cnn", "cnn"]),
        "loadavg_end": os.getloadavg(),
    }
    path = write_result(NAME, record, args.out)
    print(f"load average {record['loadavg_start']} -> {record['loadavg_end']}, one torch thread\n")
    print(
        "| detector / workers | photos/s | main process CPU ms per photo | all CPU ms per photo "
        "| photos with a face | same faces as 0 workers |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for key, r in record["results"].items():
        print(
            f"| {key} | {r['photos_per_s']:.2f} | {r['main_cpu_ms_per_photo']:.1f} "
            f"| {r['all_cpu_ms_per_photo']:.1f} | {r['photos_with_a_face']}/{r['photos']} "
            f"| {r['same_faces_as_0_workers']} |"
        )
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
