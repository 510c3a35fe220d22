"""Synthetic photos for the faces tests: real AT&T faces pasted into made-up scenes at known
places and sizes, and where their points land. Plus the data-set locations and the skip rule
(skip when ../shared is absent, fail under CI=true)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support import ATT_FACES, CELEBA, DATASETS, missing, need_dir  # noqa: F401 (shared)

ATT = ATT_FACES
SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
CNN_FACE_DETECTOR = "mmod_human_face_detector.dat"


def find_model_file(name: str) -> Path | None:
    """One of face_recognition_models' files, found without importing the package."""
    spec = importlib.util.find_spec("face_recognition_models")
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    return None


def find_shape_predictor() -> Path | None:
    """dlib's 5-point model in face_recognition_models."""
    return find_model_file(SHAPE_PREDICTOR_5)


def att_face(subject: int, index: int) -> np.ndarray:
    """AT&T photo ``s<subject>/<index>.pgm``: 92x112 grey, uint8 (skips without ../shared)."""
    need_dir(ATT)
    return _read_att(subject, index)


@cache
def _read_att(subject: int, index: int) -> np.ndarray:
    with Image.open(ATT / f"s{subject}" / f"{index}.pgm") as im:
        arr = np.asarray(im.convert("L"))
    arr.setflags(write=False)
    return arr


def background(width: int, height: int, seed: int = 0, rgb: bool = True) -> np.ndarray:
    """A smooth, slightly noisy scene: gradients plus noise, no face-like structure."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 90 + 40 * np.sin(xs / 97.0) + 30 * np.cos(ys / 61.0)
    if rgb:
        img = np.stack([base, base * 0.8 + 20, base * 0.6 + 40], axis=2)
        img += rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    else:
        img = base + rng.normal(0, 6, (height, width)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste(scene: np.ndarray, face: np.ndarray, x: int, y: int, scale: float) -> tuple[int, int]:
    """Paste ``face`` (grey) resized by ``scale`` at ``(x, y)`` (its top-left pixel) into
    ``scene`` in place, clipped to the scene; returns the pasted size ``(w, h)``.

    A point ``p`` of the face (pixel centres) lands at ``(p + 0.5) * scale - 0.5 + (x, y)``.
    """
    h0, w0 = face.shape
    w, h = round(w0 * scale), round(h0 * scale)
    resized = np.asarray(Image.fromarray(face).resize((w, h), Image.Resampling.BILINEAR))
    if scene.ndim == 3:
        resized = np.repeat(resized[:, :, None], 3, axis=2)
    sy0, sx0 = max(y, 0), max(x, 0)
    sy1, sx1 = min(y + h, scene.shape[0]), min(x + w, scene.shape[1])
    scene[sy0:sy1, sx0:sx1] = resized[sy0 - y : sy1 - y, sx0 - x : sx1 - x]
    return w, h


def map_points(points: np.ndarray, x: int, y: int, scale: float) -> np.ndarray:
    """Face points (pixel centres) after :func:`paste` at ``(x, y)`` with ``scale``."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * scale - 0.5 + np.array([x, y])


def map_box(box: tuple[float, ...], x: int, y: int, scale: float) -> tuple[float, ...]:
    """A face box (pixel edges) after :func:`paste`."""
    left, top, right, bottom = box
    return (left * scale + x, top * scale + y, right * scale + x, bottom * scale + y)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
