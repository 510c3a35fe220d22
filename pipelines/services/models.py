"""Model versions as the services see them: a reference (plain data) and a cache of encoders.

``ModelRef`` is what travels between tasks and processes; ``EncoderCache`` turns one into a
loaded, checksum-verified encoder once per process and model version. Its owner is the
:class:`~pipelines.services.runtime.Runtime` that created it: a command, a flow's task process,
a Dask worker or the HTTP service each hold one for as long as they live.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipelines.services.crops import CropSpec
from pipelines.services.errors import ModelError
from pipelines.services.model_files import FACE_RESNET, model_file
from pipelines.services.scoring import Scoring
from siamese.config import EncoderConfig
from storage.models import ModelVersion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """What the embedding steps need to know about a model version (plain data for tasks)."""

    id: int
    name: str
    checkpoint: str
    checkpoint_sha256: str
    dim: int
    distance: str
    margin: float
    crop: CropSpec = CropSpec()
    architecture: str = "siamese"
    scoring: Scoring = Scoring()  # what it records; versions from before: best, largest

    @classmethod
    def of(cls, row: ModelVersion) -> ModelRef:
        return cls(
            row.id,
            row.name,
            row.checkpoint_path,
            row.checkpoint_sha256,
            row.embedding_dim,
            row.distance,
            float(row.margin),
            CropSpec.from_dict((row.config or {}).get("crop")),
            row.architecture,
            _scoring_of(row),
        )


def _scoring_of(row: ModelVersion) -> Scoring:
    """The version's recorded scoring; before it was recorded, the flip was in the metrics."""
    config = row.config or {}
    if config.get("scoring"):
        return Scoring.from_dict(config["scoring"])
    validation = (row.metrics or {}).get("validation") or {}
    return Scoring(flip_average=bool(validation.get("flip_average", False)))


@dataclass(frozen=True)
class LoadedEncoder:
    """An encoder in eval mode with the configuration its inputs are prepared by."""

    module: Any  # torch.nn.Module
    config: Any  # siamese.config.EncoderConfig


def model_name(parts: list[str], seed: int, prefix: str = "") -> str:
    """A new model version's name: ``{prefix}{parts joined by -}-s{seed}-{UTC time}``, e.g.
    ``siamese-hadsell-l2-s0-20261203T101500123456`` or ``dlib-resnet-zeroshot-flip-s0-...``."""
    return f"{prefix}{'-'.join(parts)}-s{seed}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(sessions: sessionmaker[Session], ref: str | None) -> ModelRef:
    """The named model (name or id), else the newest one; refuses models that cannot embed."""
    from storage.registry import get_model_version, latest_model_version

    with sessions() as s:
        row = get_model_version(session=s, ref=ref) if ref else latest_model_version(session=s)
        if row is None:
            raise ModelError("no trained model yet; run `siamid train --data PATH` first")
        model, arch = ModelRef.of(row), row.architecture
    if arch == "two-channel" or model.dim <= 0:
        raise ModelError(
            f"model {model.name} is a two-channel net: it scores pairs and has no per-image "
            "embedding to index; train a siamese or pseudo model for `embed`"
        )
    return model


class EncoderCache:
    """Loaded encoders by checkpoint checksum; thread-safe, at most ``capacity`` kept."""

    def __init__(self, capacity: int = 2) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._loaded: dict[str, LoadedEncoder] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._loaded)

    def get(self, model: ModelRef) -> LoadedEncoder:
        """The model's encoder, verified against its registered sha256 on first load."""
        with self._lock:
            hit = self._loaded.pop(model.checkpoint_sha256, None)
            if hit is None:
                hit = load_encoder(model)
            self._loaded[model.checkpoint_sha256] = hit  # most recent last
            while len(self._loaded) > self.capacity:
                self._loaded.pop(next(iter(self._loaded)))
            return hit

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


def load_encoder(model: ModelRef) -> LoadedEncoder:
    """Load a model's encoder from its checkpoint, refusing a missing or altered file."""
    from siamese.training import load_checkpoint

    path = Path(model.checkpoint)
    if not path.is_file():
        raise ModelError(
            f"the checkpoint of model {model.name} is missing at {path}; retrain with "
            "`siamid train` or restore the file"
        )
    if sha256_file(path) != model.checkpoint_sha256:
        raise ModelError(
            f"the checkpoint {path} of model {model.name} does not match its registered "
            "sha256 (altered or replaced); restore it or train a new model"
        )
    if model.architecture == "dlib-resnet":
        return load_pretrained(path)
    ckpt = load_checkpoint(path)
    if ckpt.encoder is None:
        raise ModelError(f"model {model.name} has no encoder to embed with")
    ckpt.encoder.eval()
    logger.debug("loaded encoder of model %s from %s", model.name, path)
    return LoadedEncoder(ckpt.encoder, ckpt.encoder_config)


#: The input the pretrained encoder takes: 150x150 RGB in [0, 1] (it subtracts dlib's mean).
PRETRAINED_INPUT = EncoderConfig(
    in_channels=3, input_size=(150, 150), pixel_mean=0.0, pixel_std=1.0, normalize=False
)


def backbone_file() -> Path:
    return model_file(FACE_RESNET)


def load_pretrained(checkpoint: Path) -> LoadedEncoder:
    """The encoder of a ``dlib-resnet`` model version, its body checked against the checkpoint."""
    from siamese.pretrained import load_encoder, read_checkpoint

    body = backbone_file()
    expected = read_checkpoint(checkpoint)["backbone_sha256"]
    if sha256_file(body) != expected:
        raise ModelError(
            f"{body} differs from the face ResNet this model was registered with; reinstall "
            "face-recognition-models 0.3.0 or register the model again"
        )
    return LoadedEncoder(load_encoder(checkpoint, body), PRETRAINED_INPUT)
