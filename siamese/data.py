"""Face images to tensors: preprocessing, bulk loading and a ``Dataset`` for DataLoader workers.

Preprocessing is fixed and deterministic (no statistics learned from data), so an
image preprocessed at enrolment and at query time gives the same tensor:
convert to grey (``L``) or ``RGB`` per ``EncoderConfig.in_channels``, resize to
``input_size``, scale to ``[0, 1]``, then ``(x - pixel_mean) / pixel_std``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from siamese.config import EncoderConfig
from siamese.images import IMAGE_EXTENSIONS, ImageRejected, decode_file

logger = logging.getLogger(__name__)

__all__ = [
    "FaceDataset",
    "ImageRejected",
    "encode_labels",
    "list_identity_folders",
    "load_faces",
    "load_image",
    "preprocess",
]


def preprocess(img: Image.Image, cfg: EncoderConfig) -> Tensor:
    """One PIL image -> ``[C, H, W]`` float32 tensor ready for the encoder.

    Args:
        img: any PIL image (mode converted as needed).
        cfg: gives ``in_channels``, ``input_size`` ``(H, W)`` and the normalisation.
    """
    mode = "L" if cfg.in_channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    h, w = cfg.input_size
    if img.size != (w, h):
        # PIL's bilinear filter widens its support when shrinking, i.e. it
        # antialiases, which matters for the 2x downscale of AT&T faces.
        img = img.resize((w, h), resample=Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[None, :, :]
    else:
        arr = np.ascontiguousarray(arr.transpose(2, 0, 1))
    arr = (arr - cfg.pixel_mean) / cfg.pixel_std
    return torch.from_numpy(arr)


def load_image(path: Path | str, cfg: EncoderConfig) -> Tensor:
    """Read and preprocess one image file.

    Decoding goes through :func:`siamese.images.decode_file` (full decode, EXIF
    orientation, size limits), the same path enrolment and queries take, so
    training sees exactly what the index will.

    Raises:
        ImageRejected: the file is missing or not a usable image (``reason`` says why).
    """
    return preprocess(decode_file(Path(path)).image, cfg)


def load_faces(paths: Sequence[Path | str], cfg: EncoderConfig) -> Tensor:
    """Read and preprocess many images into one ``[N, C, H, W]`` tensor."""
    h, w = cfg.input_size
    if len(paths) == 0:
        return torch.empty(0, cfg.in_channels, h, w)
    return torch.stack([load_image(p, cfg) for p in paths])


class FaceDataset(Dataset[Tensor]):
    """Preprocessed face tensors from image paths, for a ``DataLoader`` with workers.

    Holds only paths and the (picklable, frozen) config, so it is cheap to send to
    worker processes; each item is one ``[C, H, W]`` tensor, batches are
    ``[B, C, H, W]`` with the default collate.
    """

    def __init__(self, paths: Sequence[Path | str], cfg: EncoderConfig) -> None:
        self.paths = [Path(p) for p in paths]
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        return load_image(self.paths[index], self.cfg)


def _natural_key(name: str) -> tuple[object, ...]:
    # "s2" before "s10", "2.pgm" before "10.pgm".
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def list_identity_folders(root: Path | str) -> tuple[list[Path], list[str]]:
    """Images of a ``root/<identity>/<image>`` tree (the AT&T layout), in natural order.

    Returns:
        ``(paths, identity_names)``, one name per path.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    paths: list[Path] = []
    names: list[str] = []
    for folder in sorted(
        (d for d in root.iterdir() if d.is_dir()), key=lambda d: _natural_key(d.name)
    ):
        files = sorted(
            (f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda f: _natural_key(f.name),
        )
        paths.extend(files)
        names.extend([folder.name] * len(files))
    return paths, names


def encode_labels(names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Identity names -> ``(int64 labels [N], classes)`` with ``classes[label] == name``.

    Classes keep first-appearance order, so labels follow the input's order.
    """
    classes: dict[str, int] = {}
    labels = np.fromiter((classes.setdefault(n, len(classes)) for n in names), dtype=np.int64)
    return labels, list(classes)
