"""The ``train`` flow: gallery images -> contrastive training -> a registered ``model_version``.

Tasks are thin wrappers; the work is in plain functions here and in ``siamese.training``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines.errors import TrainingDataError
from pipelines.gallery import import_items, scan_image_folder
from pipelines.runtime import Runtime, open_runtime
from pipelines.settings import Settings
from siamese.config import ARCHS, EncoderConfig, TrainConfig
from storage.images import labelled_images
from storage.registry import NewModelVersion, register_model_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSet:
    paths: list[str]
    names: list[str]  # identity name per image

    @property
    def identities(self) -> int:
        return len(set(self.names))


def training_set(rt: Runtime, data: Path | None) -> TrainingSet:
    """Accepted images of the folder's identities (imported first), or of the whole gallery."""
    wanted: set[str] | None = None
    if data is not None:
        items = scan_image_folder(data)
        import_items(items, sessions=rt.sessions, limits=rt.limits)
        wanted = {item.identity for item in items if item.identity is not None}
    with rt.sessions() as s:
        rows = [(u, n) for _, u, n in labelled_images(session=s) if wanted is None or n in wanted]
    return TrainingSet([u for u, _ in rows], [n for _, n in rows])


def check_training_set(ts: TrainingSet, config: TrainConfig, source: str) -> None:
    """Refuse data that cannot train a model, before any training starts."""
    if not ts.paths:
        raise TrainingDataError(
            f"the dataset {source} has no accepted images; import a gallery first "
            "(`siamid gallery import PATH`) or give --data PATH/<identity>/<image>"
        )
    counts = Counter(ts.names)
    usable = sorted(n for n, c in counts.items() if c >= 2)
    if not usable:
        raise TrainingDataError(
            f"every person in {source} has a single image; contrastive training needs at least "
            "2 images of a person to make a same-person pair"
        )
    needed = 4 if config.val_fraction > 0 else 2
    if len(usable) < needed:
        raise TrainingDataError(
            f"{source} has {len(usable)} people with 2 or more images; training with an "
            f"identity-disjoint validation split needs at least {needed}"
        )


def model_name(config: TrainConfig, when: datetime) -> str:
    return f"{config.arch}-{config.loss}-{config.distance}-s{config.seed}-{when:%Y%m%dT%H%M%S%f}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_configs(
    *,
    arch: str = "siamese",
    loss: str | None = None,
    distance: str = "l2",
    margin: float | None = None,
    epochs: int | None = None,
    seed: int = 0,
    preset: str = "default",
    members: int | None = None,
) -> tuple[TrainConfig, EncoderConfig]:
    """The defaults with the user's choices on top; raises ValueError for a bad value."""
    if arch not in ARCHS:
        raise ValueError(f"--arch must be one of {', '.join(ARCHS)}; got {arch!r}")
    loss = loss or ("bce" if arch == "two-channel" else "hadsell")
    changes: dict[str, Any] = {"arch": arch, "loss": loss, "distance": distance, "seed": seed}
    if margin is not None:
        changes["margin"] = margin
    if epochs is not None:
        changes["epochs"] = epochs
    if members is not None:
        changes["members"] = members
    config = replace(TrainConfig(), **changes)
    encoder = EncoderConfig.chopra2005() if preset == "chopra2005" else EncoderConfig()
    return config, encoder


def run_training(
    ts: TrainingSet, config: TrainConfig, encoder: EncoderConfig, checkpoint: Path
) -> dict[str, Any]:
    """Load the images and train; returns the validation figures as plain data."""
    import numpy as np
    import torch

    from siamese.data import encode_labels, load_faces
    from siamese.training import train

    labels, classes = encode_labels(ts.names)
    images = load_faces(ts.paths, encoder)

    def progress(report: Any) -> None:
        print(report.line(), flush=True)

    result = train(
        images, np.asarray(labels), config, encoder, checkpoint_path=checkpoint, on_epoch=progress
    )
    return {
        "eer": result.best_eer,
        "threshold": result.best_threshold,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "genuine_quantiles": result.genuine_quantiles,
        "impostor_quantiles": result.impostor_quantiles,
        "train_identities": [classes[i] for i in result.train_identities],
        "val_identities": [classes[i] for i in result.val_identities],
        "images": len(ts.paths),
        "members": config.effective_members,
        "member_eers": result.member_eers,
        "seconds": round(result.seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


# ------------------------------------------------------------------ Prefect


@task(cache_policy=NO_CACHE)
def collect_training_set(data: str | None) -> TrainingSet:
    rt = open_runtime(Settings())
    return training_set(rt, Path(data) if data else None)


@task(cache_policy=NO_CACHE)
def train_model(
    ts: TrainingSet, config: dict[str, Any], encoder: dict[str, Any], checkpoint: str
) -> dict[str, Any]:
    return run_training(
        ts, TrainConfig.from_dict(config), EncoderConfig.from_dict(encoder), Path(checkpoint)
    )


def register_trained(
    rt: Runtime,
    name: str,
    checkpoint: Path,
    config: TrainConfig,
    encoder: EncoderConfig,
    validation: dict[str, Any],
    **extra_metrics: Any,
) -> tuple[int, str]:
    """Register a finished training as a ``model_version`` row: (id, name)."""
    row = NewModelVersion(
        name=name,
        architecture=config.arch,
        config={"train": config.to_dict(), "encoder": encoder.to_dict()},
        checkpoint_path=str(checkpoint),
        checkpoint_sha256=sha256_file(checkpoint),
        embedding_dim=0
        if config.arch == "two-channel"
        else encoder.embedding_dim * config.effective_members,
        distance=config.distance,
        margin=float(config.margin),
        metrics={"validation": validation, **extra_metrics},
    )
    with rt.sessions.begin() as s:
        mv = register_model_version(session=s, model=row)
        return mv.id, mv.name


@task(cache_policy=NO_CACHE)
def register_model(
    name: str,
    checkpoint: str,
    config: dict[str, Any],
    encoder: dict[str, Any],
    validation: dict[str, Any],
) -> dict[str, Any]:
    mv_id, mv_name = register_trained(
        open_runtime(Settings()),
        name,
        Path(checkpoint),
        TrainConfig.from_dict(config),
        EncoderConfig.from_dict(encoder),
        validation,
    )
    return {"id": mv_id, "name": mv_name}


@flow(name="train", log_prints=False)
def train_flow(
    data: str | None = None,
    arch: str = "siamese",
    loss: str | None = None,
    distance: str = "l2",
    margin: float | None = None,
    epochs: int | None = None,
    seed: int = 0,
    preset: str = "default",
    members: int | None = None,
) -> dict[str, Any]:
    """Train an encoder on the gallery (or a folder, imported first) and register it."""
    config, encoder = build_configs(
        arch=arch,
        loss=loss,
        distance=distance,
        margin=margin,
        epochs=epochs,
        seed=seed,
        preset=preset,
        members=members,
    )
    ts = collect_training_set(data)
    check_training_set(ts, config, data or "the gallery")
    settings = Settings()
    name = model_name(config, datetime.now(UTC))
    checkpoint = settings.checkpoints_dir / f"{name}.pt"
    settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    validation = train_model(ts, config.to_dict(), encoder.to_dict(), str(checkpoint))
    model = register_model(name, str(checkpoint), config.to_dict(), encoder.to_dict(), validation)
    return {
        "model_version": model["name"],
        "model_version_id": model["id"],
        "checkpoint": str(checkpoint),
        "validation": validation,
        "config": {"train": config.to_dict(), "encoder": asdict(encoder)},
    }
