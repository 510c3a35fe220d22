"""Batch encoding: image files -> vectors, decoded in DataLoader workers while the model runs."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faces.face import Face
from pipelines.services.crops import CropSpec, crop
from pipelines.services.models import LoadedEncoder
from pipelines.services.refusals import NO_FACE, Refusal
from siamese.images import DecodeLimits

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256

#: (key, path, sha256 recorded at import or None): what an encoding run reads.
FileItem = tuple[int, str, str | None]


@dataclass
class Encoded:
    """Vectors of the files that could be encoded, by key, and why not for the others."""

    keys: np.ndarray  # [n] int64
    vectors: np.ndarray  # [n, d] float32
    errors: dict[int, Refusal] = field(default_factory=dict)

    def dense(self, n: int) -> np.ndarray:
        """Vectors in key order 0..n-1 (keys must be 0..n-1; missing rows stay zero)."""
        out = np.zeros((n, self.vectors.shape[1] if self.vectors.ndim == 2 else 0), np.float32)
        out[self.keys] = self.vectors
        return out


class FaceFiles:
    """Decodes, crops and preprocesses image files in DataLoader workers; bad files become errors.

    An item is ``(x, key, reason, detail)``: a bad file's ``reason`` (a key of
    :data:`~pipelines.services.refusals.REASONS`; empty for a good one) and ``detail`` travel
    as two strings, which the DataLoader batches as they are, and become a
    :class:`~pipelines.services.refusals.Refusal` in :func:`encode_files`.

    With a recorded sha256, the bytes are checked against it: a file changed on disk since
    its import is not silently embedded under the old row. In ``detect`` mode each key's face
    (from ``faces``) is aligned; a key without one is an error (``no_face``).
    """

    def __init__(
        self,
        items: Sequence[FileItem],
        encoder_config: Any,
        limits: DecodeLimits,
        spec: CropSpec | None = None,
        faces: Mapping[int, Face] | None = None,
    ):
        self.items = list(items)
        self.cfg = encoder_config
        self.limits = limits
        self.spec = spec or CropSpec()
        self.faces = dict(faces or {})

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[Any, Refusal | None]:
        """Item ``i`` outside a DataLoader: its input tensor, or why there is none."""
        x, _, reason, detail = self[i]
        return x, Refusal(reason, detail) if reason else None

    def __getitem__(self, i: int) -> tuple[Any, int, str, str]:
        import torch

        from siamese.data import preprocess
        from siamese.images import ImageRejected, decode_bytes

        key, source, sha = self.items[i]
        h, w = self.cfg.input_size
        blank = torch.zeros(self.cfg.in_channels, h, w)
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            return blank, key, "missing", f"{source} does not exist"
        except OSError as exc:
            return blank, key, "unreadable", f"{exc.strerror or exc}"
        if sha is not None and hashlib.sha256(data).hexdigest() != sha:
            return blank, key, "changed", "the bytes differ from the imported ones; re-import"
        try:
            img = decode_bytes(data, limits=self.limits, name=source).image
        except ImageRejected as rej:
            return blank, key, rej.reason, rej.detail
        face = self.faces.get(key)
        if self.spec.detect and face is None:
            return blank, key, NO_FACE.reason, NO_FACE.detail
        return preprocess(crop(img, face, self.spec), self.cfg), key, "", ""


class Forward:
    """The encoder's forward pass on its device: on a GPU in channels_last and mixed precision.

    ``forward(x)``: ``[n, C, H, W]`` preprocessed images -> ``[n, d]`` float32 vectors. The
    caller holds ``torch.inference_mode()``.
    """

    def __init__(self, encoder: LoadedEncoder) -> None:
        import torch

        from siamese.device import resolve_device, uses_mixed_precision

        self.device = resolve_device("auto")
        self.module = encoder.module.to(self.device).to(memory_format=torch.channels_last).eval()
        self.amp = uses_mixed_precision(self.device)

    def __call__(self, x: Any) -> np.ndarray:
        import torch

        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, enabled=self.amp):
            out = self.module(x)
        return np.asarray(out.float().cpu().numpy(), np.float32)


def encode_tensors(forward: Forward, images: Sequence[Any]) -> np.ndarray:
    """Preprocessed images (``[C, H, W]`` tensors, e.g. chips of several probes) -> ``[n, d]``
    float32 vectors, in one forward pass. ``forward`` is made once per encoder: making one
    prepares the module again (450 us for the small CNN)."""
    import torch

    if not images:
        raise ValueError("encode_tensors needs at least one image")
    with torch.inference_mode():
        return forward(torch.stack(list(images)))


def encode_files(
    encoder: LoadedEncoder,
    items: Sequence[FileItem],
    limits: DecodeLimits,
    *,
    spec: CropSpec | None = None,
    faces: Mapping[int, Face] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
) -> Encoded:
    """Embed files by key (cropped per ``spec``, faces by key). On a GPU the forward pass uses
    channels_last and mixed precision."""
    import torch
    from torch.utils.data import DataLoader

    forward = Forward(encoder)
    loader = DataLoader(
        FaceFiles(items, encoder.config, limits, spec, faces),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=forward.device.type == "cuda",
    )
    vectors: list[np.ndarray] = []
    keys: list[int] = []
    errors: dict[int, Refusal] = {}
    with torch.inference_mode():
        for x, batch_keys, reasons, details in loader:
            ok = torch.tensor([not r for r in reasons], dtype=torch.bool)
            for k, r, d in zip(batch_keys.tolist(), reasons, details, strict=True):
                if r:
                    errors[k] = Refusal(r, d)
            if not bool(ok.any()):
                continue
            vectors.append(forward(x[ok]))
            keys.extend(batch_keys[ok].tolist())
    dim = int(vectors[0].shape[1]) if vectors else 0
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    return Encoded(np.asarray(keys, np.int64), np.ascontiguousarray(stacked, np.float32), errors)


def encode_paths(
    encoder: LoadedEncoder,
    paths: Sequence[str | Path],
    limits: DecodeLimits,
    *,
    spec: CropSpec | None = None,
    faces: Sequence[Face | None] | None = None,
    batch_size: int = 64,
    workers: int = 0,
) -> Encoded:
    """Files that are not in the gallery (probes, evaluation sets): keys are list positions,
    ``faces[i]`` the face to crop from ``paths[i]`` in detect mode."""
    items = [(i, str(p), None) for i, p in enumerate(paths)]
    by_key = {i: f for i, f in enumerate(faces or []) if f is not None}
    return encode_files(
        encoder, items, limits, spec=spec, faces=by_key, batch_size=batch_size, workers=workers
    )
