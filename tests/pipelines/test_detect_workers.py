"""Photos decoded and prepared for detection (HOG, the CNN's pyramids) in DataLoader workers:
how many (:func:`pipelines.services.detection_workers.detect_workers`), that gallery runs use
that rule, and that the faces are those this process finds, bit for bit."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
from pathlib import Path

import pytest

from pipelines.services import detection, detection_workers
from pipelines.services.detection import detect_files
from pipelines.services.detection_chunks import detect_gallery
from pipelines.services.detection_workers import MIN_PHOTOS_FOR_WORKERS, detect_workers
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.runtime import Runtime
from pipelines.settings import Settings
from siamese.images import DecodeLimits
from tests.support import CELEBA, need_dir

# celeba_wild photos: one HOG finds its face in, three it finds none in (turned heads: with
# hog+cnn the CNN's pyramids of those come from the worker too).
PHOTOS = ("7201/001085.jpg", "7204/128794.jpg", "7216/193486.jpg", "7209/076165.jpg")
LIMITS = DecodeLimits(16, 50_000_000)


def test_how_many_workers_prepare_the_photos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIAMID_DETECT_WORKERS", raising=False)
    monkeypatch.setenv("SIAMID_DETECTOR", "hog+cnn")
    monkeypatch.setattr(detection_workers, "cuda_present", lambda: False)
    assert Settings().detect_workers is None
    many, cores = MIN_PHOTOS_FOR_WORKERS, len(os.sched_getaffinity(0))
    assert detect_workers(many) == cores and detect_workers(many, 3) == 3
    assert detect_workers(many - 1) == 0 and detect_workers(many - 1, 3) == 0  # a small run
    assert detect_workers(many, 0) == 0
    monkeypatch.setenv("SIAMID_DETECTOR", "cnn")  # on a CPU: the pyramid is a sixth of it
    assert detect_workers(many) == 0 and detect_workers(many, 2) == 2
    monkeypatch.setattr(detection_workers, "cuda_present", lambda: True)
    assert detect_workers(many) == cores
    monkeypatch.setenv("SIAMID_DETECT_WORKERS", "0")
    assert detect_workers(many) == 0
    monkeypatch.setenv("SIAMID_DETECT_WORKERS", "2")
    assert detect_workers(many) == 2
    off_main: list[int] = []  # the HTTP service's threads fork nothing
    thread = threading.Thread(target=lambda: off_main.append(detect_workers(many, 2)))
    thread.start()
    thread.join()
    assert off_main == [0]

    class Daemon:  # a Dask worker process cannot start DataLoader processes
        daemon = True

    monkeypatch.setattr(multiprocessing, "current_process", Daemon)
    assert detect_workers(many, 2) == 0


def _found(paths: list[Path], workers: int) -> tuple[list, list[float]]:
    seconds: list[float] = []
    found = list(detect_files(paths, LIMITS, workers=workers, seconds=seconds))
    faces = [
        (f.outcome, f.detail, [(x.box, x.score, x.landmarks.tolist(), x.found_by) for x in f.faces])
        for f in found
    ]
    return faces, seconds


@pytest.mark.celeba
@pytest.mark.parametrize("method", ["hog+cnn", "cnn"])
def test_workers_find_what_this_process_finds(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = need_dir(CELEBA)
    monkeypatch.setenv("SIAMID_DETECTOR", method)
    monkeypatch.setattr(detection_workers, "MIN_PHOTOS_FOR_WORKERS", 0)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    paths = [root / p for p in PHOTOS[:2]] + [broken] + [root / p for p in PHOTOS[2:]]
    here, seconds_here = _found(paths, workers=0)
    there, seconds_there = _found(paths, workers=1)
    assert there == here  # outcomes, boxes, scores, landmarks, finder: bit for bit
    outcomes = [o for o, _, _ in here]
    assert outcomes[2] == "error" and outcomes.count("error") == 1
    assert all(faces for o, _, faces in here if o != "error")
    by_cnn = [faces[0][3] == "cnn" for o, _, faces in here if o != "error"]
    assert by_cnn == ([False, True, True, True] if method == "hog+cnn" else [True] * 4)
    for seconds in (seconds_here, seconds_there):  # prepare + a share of finish, per photo
        assert seconds[2] == 0.0 and all(s > 0 for i, s in enumerate(seconds) if i != 2)


@pytest.mark.celeba
def test_gallery_runs_use_the_rule(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gallery = tmp_path / "gallery"
    for name in PHOTOS[:2]:
        (gallery / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(need_dir(CELEBA) / name, gallery / name)
    import_items(scan_image_folder(gallery), sessions=rt.sessions)
    monkeypatch.setenv("SIAMID_DETECTOR", "hog+cnn")
    monkeypatch.setenv("SIAMID_DETECT_WORKERS", "1")
    monkeypatch.setattr(detection_workers, "MIN_PHOTOS_FOR_WORKERS", 2)
    used: list[int] = []
    prepared = detection.prepared_batches

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        used.append(args[-1])
        return prepared(*args, **kwargs)

    monkeypatch.setattr(detection, "prepared_batches", spy)
    found = detect_gallery(rt)
    assert (found.detected, dict(found.outcomes), used) == (2, {"ok": 2}, [1])
