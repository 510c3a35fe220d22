"""Training an encoder on gallery images and registering it as a ``model_version``.

:class:`TrainOptions` is the one declaration of what a user chooses about training: the
command line, the ``train`` flow and the evaluation's fold encoders all build their
configurations from it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from faces.face import Face
from pipelines.services.crops import CropSpec
from pipelines.services.errors import TrainingDataError
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.models import model_name, sha256_file
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import BACKBONE_SCORING, Scoring
from pipelines.services.validation import Validation
from siamese.config import ARCHS, BACKBONES, EncoderConfig, TrainConfig
from storage.images import labelled_images
from storage.registry import NewModelVersion, register_model_version

logger = logging.getLogger(__name__)

#: How long training waits for another run that detects or indexes the same gallery.
DETECT_WAIT_SECONDS = 3600.0

#: Log every n-th epoch at INFO (the others at DEBUG, shown with --verbose).
EPOCH_LOG_EVERY = 5


class TrainOptions(BaseModel):
    """The training choices a user makes; ``None`` keeps the configuration's default."""

    model_config = ConfigDict(frozen=True)

    arch: str = "siamese"
    loss: str | None = None
    distance: str = "l2"
    margin: float | None = None
    epochs: int | None = None  # dlib-resnet: 0 registers the pretrained network as it is
    seed: int = 0
    backbone: str = "small-cnn"
    members: int | None = None
    faces: str | None = None  # crop mode; None: "detect" for dlib-resnet, else "whole"
    tune: str | None = None  # dlib-resnet with epochs: "head" (the default) or "last-stages"
    # dlib-resnet: average each chip's descriptor with its mirror's; None: the backbone's default
    flip_average: bool | None = None
    template: str | None = None  # best | mean; None: the backbone's default (BACKBONE_SCORING)
    multiple_faces: str | None = None  # face_choice.MULTIPLE_FACES; None: the backbone's default

    @property
    def pretrained(self) -> bool:
        return self.backbone == "dlib-resnet"

    def crop(self) -> CropSpec:
        """The crop mode recorded with the model (CropModeError names a bad value)."""
        if self.pretrained:
            return CropSpec.dlib_chips(self.faces or "detect")
        return CropSpec(faces=self.faces or "whole")

    @property
    def head_epochs(self) -> int:
        """Epochs of the pretrained backbone's head; by default 0: the network as it is.

        Zero-shot is the default because no head trained here beat it on unseen people
        (BENCHMARKS.md, "dlib-resnet on celeba_wild": every variant of ``bench/head_search.py``
        raised the EER of the other half of celeba_wild's people, the more it trained).
        """
        return 0 if self.epochs is None else self.epochs

    def scoring(self) -> Scoring:
        """The scoring the model records: these choices over the backbone's BACKBONE_SCORING
        (the default flip is not offered where it cannot apply: --tune last-stages)."""
        base = BACKBONE_SCORING.get(self.backbone, Scoring())
        stages = self.head_epochs > 0 and self.tune_mode == "last-stages"
        flip = base.flip_average and not stages if self.flip_average is None else self.flip_average
        template, multiple = self.template or base.template, self.multiple_faces
        return Scoring(template, flip, multiple or base.multiple_faces)

    @property
    def tune_mode(self) -> str:
        """How training adapts the pretrained backbone (:data:`siamese.pretrained.MODES`)."""
        return self.tune or "head"

    def configs(self) -> tuple[TrainConfig, EncoderConfig]:
        """The defaults with these choices on top; ValueError names a bad value."""
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"--backbone must be one of {', '.join(BACKBONES)}; got {self.backbone!r}"
            )
        if self.arch not in ARCHS:
            raise ValueError(f"--arch must be one of {', '.join(ARCHS)}; got {self.arch!r}")
        if self.pretrained:
            return self._pretrained_configs()
        if self.tune is not None:
            raise ValueError("--tune applies to --backbone dlib-resnet only")
        if self.flip_average:
            raise ValueError("--flip-average applies to --backbone dlib-resnet only")
        self.scoring()
        loss = self.loss or ("bce" if self.arch == "two-channel" else "hadsell")
        changes: dict[str, Any] = {
            "arch": self.arch,
            "loss": loss,
            "distance": self.distance,
            "seed": self.seed,
        }
        for name in ("margin", "epochs", "members"):
            if getattr(self, name) is not None:
                changes[name] = getattr(self, name)
        config = replace(TrainConfig(), **changes)
        encoder = EncoderConfig.chopra2005() if self.backbone == "chopra2005" else EncoderConfig()
        return config, encoder

    def _pretrained_configs(self) -> tuple[TrainConfig, EncoderConfig]:
        from pipelines.services.models import PRETRAINED_INPUT
        from siamese.pretrained import MODES, TuneConfig

        if self.arch != "siamese" or self.distance != "l2" or (self.members or 1) != 1:
            raise ValueError(
                "--backbone dlib-resnet is one shared network with L2 distance: leave --arch, "
                "--distance and --members at their defaults"
            )
        if self.head_epochs < 0:
            raise ValueError(f"--epochs must be >= 0, got {self.head_epochs}")
        if self.tune_mode not in MODES:
            raise ValueError(f"--tune must be one of {', '.join(MODES)}; got {self.tune!r}")
        if self.scoring().flip_average and self.head_epochs > 0 and self.tune_mode == "last-stages":
            raise ValueError(
                "--flip-average works with the network as it is (--epochs 0) or a trained head "
                "(--tune head), not with --tune last-stages"
            )
        config = replace(
            TrainConfig(),
            loss=self.loss or "hadsell",
            margin=TuneConfig().margin if self.margin is None else self.margin,
            epochs=max(1, self.head_epochs),  # the config's own floor; head_epochs may be 0
            seed=self.seed,
            members=1,
        )
        return config, PRETRAINED_INPUT


@dataclass(frozen=True)
class TrainingSet:
    paths: list[str]
    names: list[str]  # identity name per image
    faces: list[Face | None] | None = None  # the face to crop per image (detect mode)

    @property
    def identities(self) -> int:
        return len(set(self.names))

    def only(self, people: set[str]) -> TrainingSet:
        keep = [i for i, n in enumerate(self.names) if n in people]
        faces = None if self.faces is None else [self.faces[i] for i in keep]
        return TrainingSet([self.paths[i] for i in keep], [self.names[i] for i in keep], faces)


@dataclass(frozen=True)
class TrainedModel:
    id: int
    name: str
    checkpoint: str
    validation: Validation


def training_set(rt: Runtime, data: Path | None, crop: CropSpec | None = None) -> TrainingSet:
    """Accepted images of the folder's identities (imported first), or of the whole gallery.

    Detect mode: the gallery's faces are detected first (once per image and detector); only
    images with an enrolled face train, on its aligned crop: the face the served model chose by
    agreement (:func:`~pipelines.services.face_choice.labelled_faces`), else the largest.
    """
    wanted: set[str] | None = None
    if data is not None:
        items = scan_image_folder(data)
        import_items(items, sessions=rt.sessions, limits=rt.limits)
        wanted = {item.identity for item in items if item.identity is not None}
    with rt.sessions() as s:
        rows = [r for r in labelled_images(session=s) if wanted is None or r[2] in wanted]
    if crop is None or not crop.detect:
        return TrainingSet([u for _, u, _ in rows], [n for _, _, n in rows])
    from pipelines.services.face_choice import labelled_faces
    from pipelines.services.indexing import detect_pending

    # under the indexing lock, waiting for a run that is detecting the same photos
    detect_pending(rt, wait_seconds=DETECT_WAIT_SECONDS)
    chosen = labelled_faces(rt, [i for i, _, _ in rows])
    rows = [r for r in rows if r[0] in chosen]
    return TrainingSet(
        [u for _, u, _ in rows], [n for _, _, n in rows], [chosen[i] for i, _, _ in rows]
    )


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


def trainable_set(rt: Runtime, data: Path | None, options: TrainOptions) -> TrainingSet:
    """The training set of ``data`` (imported first) or of the gallery, refused when it cannot
    train (a zero-shot registration trains nothing and needs no data)."""
    ts = training_set(rt, data, options.crop())
    if not (options.pretrained and options.head_epochs == 0):
        check_training_set(ts, options.configs()[0], str(data) if data else "the gallery")
    return ts


def _log_epoch(report: Any) -> None:
    last = report.epoch == report.epochs
    level = logging.INFO if last or report.epoch % EPOCH_LOG_EVERY == 0 else logging.DEBUG
    logger.log(level, "%s", report.line())


def load_inputs(ts: TrainingSet, encoder: EncoderConfig, crop: CropSpec | None = None) -> Any:
    """The encoder's inputs for every image of ``ts``: ``[N, C, H, W]`` (crops in detect mode)."""
    import torch

    from pipelines.services.encoding import FaceFiles
    from siamese.data import load_faces
    from siamese.images import DecodeLimits

    if crop is None or not crop.detect:
        return load_faces(ts.paths, encoder)
    faces = {i: f for i, f in enumerate(ts.faces or []) if f is not None}
    files = FaceFiles(
        [(i, p, None) for i, p in enumerate(ts.paths)], encoder, DecodeLimits(), crop, faces
    )
    tensors = []
    for i in range(len(files)):
        x, refusal = files.load(i)
        if refusal is not None:
            raise TrainingDataError(f"{ts.paths[i]} cannot train: {refusal}")
        tensors.append(x)
    return torch.stack(tensors)


def run_training(
    ts: TrainingSet,
    config: TrainConfig,
    encoder: EncoderConfig,
    checkpoint: Path,
    crop: CropSpec | None = None,
) -> Validation:
    """Load the images (or their aligned faces) and train; returns the validation figures."""
    import numpy as np
    import torch

    from siamese.data import encode_labels
    from siamese.device import resolve_device
    from siamese.training import train

    labels, classes = encode_labels(ts.names)
    images = load_inputs(ts, encoder, crop)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    result = train(
        images, np.asarray(labels), config, encoder, checkpoint_path=checkpoint, on_epoch=_log_epoch
    )
    return Validation(
        eer=result.best_eer,
        threshold=result.best_threshold,
        genuine_quantiles=result.genuine_quantiles,
        impostor_quantiles=result.impostor_quantiles,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        stopped_early=result.stopped_early,
        train_identities=[classes[i] for i in result.train_identities],
        val_identities=[classes[i] for i in result.val_identities],
        images=len(ts.paths),
        members=config.effective_members,
        member_eers=result.member_eers,
        seconds=round(result.seconds, 2),
        torch_threads=torch.get_num_threads(),
        device=resolve_device(config.device).type,
    )


def register_trained(
    rt: Runtime,
    name: str,
    checkpoint: Path,
    config: TrainConfig,
    encoder: EncoderConfig,
    validation: Validation,
    crop: CropSpec | None = None,
    *,
    architecture: str | None = None,
    scoring: Scoring | None = None,
    **extra_metrics: Any,
) -> TrainedModel:
    """Register a finished training as a ``model_version`` row (with its crop mode and the
    scoring identify, calibration and evaluation apply to it)."""
    pretrained = architecture == "dlib-resnet"
    if pretrained:
        from siamese.dlib_resnet import EMBEDDING_DIM

        dim = EMBEDDING_DIM
    else:
        dim = (
            0 if config.arch == "two-channel" else encoder.embedding_dim * config.effective_members
        )
    row = NewModelVersion(
        name=name,
        architecture=architecture or config.arch,
        config={
            "train": config.to_dict(),
            "encoder": encoder.to_dict(),
            "crop": (crop or CropSpec()).to_dict(),
            "scoring": (scoring or Scoring()).to_dict(),
        },
        checkpoint_path=str(checkpoint),
        checkpoint_sha256=sha256_file(checkpoint),
        embedding_dim=dim,
        distance=config.distance,
        margin=float(config.margin),
        metrics={"validation": validation.as_dict(), **extra_metrics},
    )
    with rt.sessions.begin() as s:
        mv = register_model_version(session=s, model=row)
        return TrainedModel(mv.id, mv.name, str(checkpoint), validation)


def train_model(
    rt: Runtime,
    ts: TrainingSet,
    options: TrainOptions,
    *,
    hold_out: bool = True,
    name_prefix: str = "",
    **extra_metrics: Any,
) -> TrainedModel:
    """Train on ``ts`` into a new checkpoint and register the model version.

    ``hold_out``: validate on identity-disjoint people and stop early on them; without it every
    person trains for the full epochs (the evaluation's folds, whose test is held out anyway).
    """
    config, encoder = options.configs()
    if not hold_out:
        config = replace(config, val_fraction=0.0, patience=0)
    crop = options.crop()
    if options.pretrained:
        from pipelines.services import pretrained

        mode = options.tune_mode if options.head_epochs > 0 else "zeroshot"
        parts = ["dlib-resnet", mode] + (["flip"] if options.scoring().flip_average else [])
        name = model_name(parts, config.seed, name_prefix)
        checkpoint = rt.settings.checkpoint_file(name)
        validation = pretrained.train_pretrained(
            rt,
            ts,
            config,
            crop,
            checkpoint,
            epochs=options.head_epochs,
            mode=options.tune_mode,
            flip_average=options.scoring().flip_average,
        )
        architecture = "dlib-resnet"
    else:
        name = model_name([config.arch, config.loss, config.distance], config.seed, name_prefix)
        checkpoint = rt.settings.checkpoint_file(name)
        validation = run_training(ts, config, encoder, checkpoint, crop)
        architecture = None
    return register_trained(
        rt,
        name,
        checkpoint,
        config,
        encoder,
        validation,
        crop,
        architecture=architecture,
        scoring=options.scoring(),
        **extra_metrics,
    )
