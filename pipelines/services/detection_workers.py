"""Photos read, decoded and prepared for face detection in DataLoader worker processes, while
the main process runs the CNN's network on ready batches (:func:`prepared_batches`, used by
:func:`pipelines.services.detection.detect_files`), and how many workers
(:func:`detect_workers`, ``SIAMID_DETECT_WORKERS``).

A worker does :meth:`faces.detect.Detector.prepare` (HOG with its landmarks; the CNN's working
copy and pyramid levels, :func:`faces.mmod.pyramid_input`) on the detector it inherited by
fork; the main process does :meth:`~faces.detect.Detector.finish` (the CNN's forward passes,
the pyramids padded to one canvas per batch, landmarks). The faces are the same bit for bit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from siamese.images import ImageRejected

if TYPE_CHECKING:
    from faces.detect import Detector, Prepared

#: Photos per :meth:`faces.detect.Detector.finish` call in gallery runs: the CNN searches
#: them in one forward pass (a few per CPU core; a GPU takes more).
DETECT_BATCH = 16

#: Runs of fewer photos are prepared in this process: forking workers for one or two batches
#: costs about what it saves.
MIN_PHOTOS_FOR_WORKERS = 2 * DETECT_BATCH


def detect_workers(photos: int, workers: int | None = None) -> int:
    """How many DataLoader processes prepare the photos of a detection run (read, decode and
    the :class:`DecodeLimits` checks, then :meth:`faces.detect.Detector.prepare`: HOG and the
    CNN's working copy and pyramid) while this process runs the CNN's network on ready
    batches. The one rule for it (measured: BENCHMARKS.md, issue 21, "decode and pyramid in
    DataLoader workers"):

    - ``workers`` when the caller gives it, else ``SIAMID_DETECT_WORKERS`` when set;
    - otherwise one per CPU core this process may use: with HOG (``hog``, ``hog+cnn``) the
      workers do nearly all the work (this process: 4 of 44 ms per photo) and two workers
      on two cores detect 1.6-2.2x as many photos per second as none; but none for the CNN
      alone on a CPU, where the pyramid is a sixth of the work and receiving it from a
      worker costs this process about as much (main-process CPU 50 against 52 ms a photo,
      slower on a shared machine);
    - 0 for runs of fewer than :data:`MIN_PHOTOS_FOR_WORKERS` photos, in a daemonic process
      (a Dask worker), which cannot start processes, and off the main thread (the HTTP
      service's request and job threads: a threaded server forks nothing).

    The faces found are the same bit for bit either way (tests/pipelines/test_detect_workers.py).
    """
    import multiprocessing

    if threading.current_thread() is not threading.main_thread():
        return 0
    if photos < MIN_PHOTOS_FOR_WORKERS or multiprocessing.current_process().daemon:
        return 0
    if workers is None:
        from pipelines.settings import Settings

        settings = Settings()
        workers = settings.detect_workers
        if workers is None:
            cpu_cnn = settings.detector == "cnn" and not cuda_present()
            workers = 0 if cpu_cnn else len(os.sched_getaffinity(0))
    return max(0, workers)


@dataclass(frozen=True)
class Rejected:
    """A photo that could not be read or decoded (:class:`ImageRejected`'s reason and detail,
    which pickle where the exception does not)."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Ready:
    """A photo :meth:`faces.detect.Detector.prepare` made ready, and the seconds that took."""

    prepared: Prepared
    seconds: float


class _Prepared:
    """A map-style data set of photos read, decoded and prepared for detection (or why one
    could not be decoded), for a DataLoader: its workers get the detector by fork."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        read: Callable[[str | Path], np.ndarray],
        det: Detector,
    ) -> None:
        self.paths, self.read, self.det = list(paths), read, det

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Ready | Rejected:
        try:
            image = self.read(self.paths[i])
        except ImageRejected as rej:
            return Rejected(rej.reason, rej.detail)
        t0 = time.perf_counter()
        prepared = self.det.prepare(image)
        return Ready(prepared, time.perf_counter() - t0)


def prepared_batches(
    paths: Sequence[str | Path],
    read: Callable[[str | Path], np.ndarray],
    det: Detector,
    batch: int,
    workers: int,
) -> Iterator[list[Ready | Rejected]]:
    """The photos prepared, ``batch`` at a time, in order; by ``workers`` DataLoader processes
    (forked: they prepare the next batches while this process runs the CNN) or in this
    process when 0."""
    data = _Prepared(paths, read, det)
    if workers <= 0:
        for start in range(0, len(data), batch):
            yield [data[i] for i in range(start, min(start + batch, len(data)))]
        return
    from torch.utils.data import DataLoader

    loader: DataLoader[Ready | Rejected] = DataLoader(
        data,  # type: ignore[arg-type]  # a map-style data set; torch is imported lazily
        batch_size=batch,
        num_workers=workers,
        collate_fn=_pack,
        prefetch_factor=2,
        multiprocessing_context="fork",  # the detector (dlib's models) is inherited, not pickled
    )
    for packed in loader:
        yield _unpack(*packed)


def _pack(photos: list[Ready | Rejected]) -> tuple[list[Ready | Rejected], Any]:
    """A worker's batch for the trip to this process: the CNN's pyramid levels of all its
    photos (float32, ~6 MB for a 400x300 photo) moved into one tensor, which the DataLoader
    sends as one shared-memory segment; the rest is pickled through its pipe. Through the
    pipe, the levels cost this process about what building them does (BENCHMARKS.md, issue 21).
    """
    import torch

    levels = [lv for p in photos if isinstance(p, Ready) for lv in _cnn_levels(p)]
    if not levels:
        return photos, None
    flat = torch.empty(sum(lv.size for lv in levels), dtype=torch.float32)
    start = 0
    for lv in levels:
        flat[start : start + lv.size] = torch.from_numpy(lv).reshape(-1)
        start += lv.size
    return [
        _with_levels(p, ()) if isinstance(p, Ready) and _cnn_levels(p) else p for p in photos
    ], flat


def _unpack(photos: list[Ready | Rejected], flat: Any) -> list[Ready | Rejected]:
    """:func:`_pack` undone: each photo's levels are views of the one tensor."""
    if flat is None:
        return photos
    values = flat.numpy()
    out: list[Ready | Rejected] = []
    start = 0
    for p in photos:
        if isinstance(p, Ready) and p.prepared.cnn is not None:
            levels = []
            for left, top, right, bottom in p.prepared.cnn[1].layout.rects:
                shape = (3, bottom - top + 1, right - left + 1)
                size = shape[0] * shape[1] * shape[2]
                levels.append(values[start : start + size].reshape(shape))
                start += size
            p = _with_levels(p, tuple(levels))
        out.append(p)
    return out


def _cnn_levels(p: Ready | Rejected) -> tuple[np.ndarray, ...]:
    if isinstance(p, Ready) and p.prepared.cnn is not None:
        return p.prepared.cnn[1].levels
    return ()


def _with_levels(p: Ready, levels: tuple[np.ndarray, ...]) -> Ready:
    assert p.prepared.cnn is not None
    copy, inp = p.prepared.cnn
    prepared = replace(p.prepared, cnn=(copy, replace(inp, levels=levels)))
    return replace(p, prepared=prepared)


def cuda_present() -> bool:
    """Whether the CNN should run on a GPU: one is present (torch already imported by the CNN)."""
    import torch

    return bool(torch.cuda.is_available())
