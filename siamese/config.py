"""Frozen configuration dataclasses for the encoder, augmentation and training.

All three are validated when built (``ValueError`` naming the field and what is
allowed) and round-trip through ``dataclasses.asdict`` / ``from_dict``, which is how
checkpoints store them: a model is rebuilt from the checkpoint alone.

The defaults are the configuration chosen by the AT&T search in ``bench/train_att.py``
(see BENCHMARKS.md): they train in a few minutes on two CPU cores and generalise to
people never seen in training.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

logger = logging.getLogger(__name__)

Preset = Literal["default", "chopra2005"]
Activation = Literal["relu", "tanh"]
Pooling = Literal["avg", "flatten"]
Arch = Literal["siamese", "pseudo", "two-channel"]
LossName = Literal["hadsell", "chopra", "bce"]
DistanceName = Literal["l2", "l1", "cosine"]
Schedule = Literal["cosine", "constant"]
OptimizerName = Literal["adamw", "sgd"]

PRESETS: tuple[str, ...] = ("default", "chopra2005")
#: Encoders a model can be built on: the small CNN (preset "default") and Chopra 2005's net,
#: trained from scratch, or dlib's pretrained face ResNet (zero-shot or adapted, TUNE_MODES).
BACKBONES: tuple[str, ...] = ("small-cnn", "chopra2005", "dlib-resnet")
#: How training adapts the pretrained backbone: a head over its descriptors, or its last
#: stages fine-tuned (siamese.pretrained).
TUNE_MODES: tuple[str, ...] = ("head", "last-stages")
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh")
POOLINGS: tuple[str, ...] = ("avg", "flatten")
ARCHS: tuple[str, ...] = ("siamese", "pseudo", "two-channel")
LOSSES: tuple[str, ...] = ("hadsell", "chopra", "bce")
DISTANCES: tuple[str, ...] = ("l2", "l1", "cosine")
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_range(
    name: str,
    value: float,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}; got {value!r}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}; got {value!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _tuplify(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    # asdict() keeps tuples, but a checkpoint written by another tool or JSON may hold lists.
    out = dict(data)
    for key in keys:
        if key in out and isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return data


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of the face encoder (a small CNN) and of its input.

    Attributes:
        preset: ``"default"`` builds ``len(widths)`` stages of
            ``convs_per_stage`` x (3x3 conv, batch norm, activation) followed by 2x2
            max-pooling, then a pooled or flattened head, dropout and a linear
            embedding. ``"chopra2005"`` builds the network of Chopra, Hadsell & LeCun
            (CVPR 2005): C1 15@7x7, S2 2x2, C3 45@6x6, S4 4x3, C5 250@5x5, F6 -> 50;
            its widths come from ``widths`` (15, 45, 250) and its stages ignore
            ``convs_per_stage`` and ``pooling``.
        in_channels: 1 (grey) or 3 (RGB); images are converted to this on load.
        input_size: ``(height, width)`` every image is resized to.
        widths: output channels of each convolutional stage.
        convs_per_stage: 3x3 convolutions per stage (default preset only).
        embedding_dim: size of the output embedding.
        normalize: L2-normalise embeddings, so L2 distances lie in ``[0, 2]``.
        embedding_bn: batch-normalise the embedding before the L2 normalisation. It
            centres the embeddings: without it they all start out pointing the same
            way (ReLU features are positive), every distance is tiny and the
            contrastive loss needs many steps to spread them over the sphere.
        dropout: dropout probability before the embedding layer.
        flip_tta: in eval mode, embed each face and its mirror image and sum the two
            (before normalisation): a mirrored face is the same person, and the sum
            cancels some pose and lighting asymmetry. Doubles inference cost only.
        batch_norm: batch normalisation after each convolution.
        activation: ``"relu"`` or ``"tanh"``.
        pooling: ``"flatten"`` keeps the spatial layout of the last feature map
            (faces are roughly aligned, so where a feature is matters); ``"avg"``
            averages it away (fewer parameters, translation invariant).
        pixel_mean, pixel_std: fixed normalisation applied to pixels in ``[0, 1]``.
    """

    preset: Preset = "default"
    in_channels: int = 1
    input_size: tuple[int, int] = (56, 48)
    widths: tuple[int, ...] = (16, 32, 64)
    convs_per_stage: int = 1
    embedding_dim: int = 64
    normalize: bool = True
    embedding_bn: bool = False
    dropout: float = 0.3
    flip_tta: bool = True
    batch_norm: bool = True
    activation: Activation = "relu"
    pooling: Pooling = "flatten"
    pixel_mean: float = 0.5
    pixel_std: float = 0.25

    def __post_init__(self) -> None:
        _check_choice("preset", self.preset, PRESETS)
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB); got {self.in_channels!r}")
        if (
            not isinstance(self.input_size, tuple)
            or len(self.input_size) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 8 for v in self.input_size)
        ):
            raise ValueError(
                "input_size must be a (height, width) tuple of integers >= 8; "
                f"got {self.input_size!r}"
            )
        if (
            not isinstance(self.widths, tuple)
            or not self.widths
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.widths)
        ):
            raise ValueError(
                f"widths must be a non-empty tuple of positive ints; got {self.widths!r}"
            )
        if self.preset == "chopra2005" and len(self.widths) != 3:
            raise ValueError(
                f"the chopra2005 preset has three layers (C1, C3, C5): widths needs 3 entries; "
                f"got {self.widths!r}"
            )
        if self.preset == "default":
            # Each stage halves the resolution; the last feature map must stay non-empty.
            min_side = 2 ** len(self.widths)
            if min(self.input_size) < min_side:
                raise ValueError(
                    f"input_size {self.input_size} is too small for {len(self.widths)} stages "
                    f"(each halves the resolution): use at least {min_side} pixels per side"
                )
        _check_int("convs_per_stage", self.convs_per_stage, 1)
        _check_int("embedding_dim", self.embedding_dim, 1)
        _check_range("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_range("pixel_mean", self.pixel_mean)
        _check_range("pixel_std", self.pixel_std, 0.0, lo_open=True)

    @classmethod
    def chopra2005(cls) -> EncoderConfig:
        """The network of Chopra, Hadsell & LeCun, CVPR 2005 (Sec. 4), on 56x46 grey input.

        C1 15@7x7 -> S2 2x2 -> C3 45@6x6 -> S4 4x3 -> C5 250@5x5 -> F6 50. The
        paper uses sigmoid-like units, no normalisation layers and an unnormalised
        output whose L1 distance is the energy E of eq. 8.
        """
        return cls(
            preset="chopra2005",
            in_channels=1,
            input_size=(56, 46),
            widths=(15, 45, 250),
            embedding_dim=50,
            normalize=False,
            dropout=0.0,
            batch_norm=False,
            activation="tanh",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        return cls(**_tuplify(_known_fields(cls, data), ("input_size", "widths")))


@dataclass(frozen=True)
class AugmentConfig:
    """Random photometric and geometric jitter applied to training images (tensors).

    Attributes:
        enabled: master switch; ``False`` makes augmentation the identity.
        max_shift: largest translation, as a fraction of the image side.
        max_rotation: largest in-plane rotation in degrees.
        max_scale: largest relative zoom in or out (0.1 -> scale in [0.9, 1.1]).
        brightness: largest additive brightness change, in units of the
            normalised image's standard deviation.
        contrast: largest relative contrast change (0.2 -> factor in [0.8, 1.2]).
        hflip_prob: probability of a horizontal (mirror) flip; a mirrored face is
            still the same person.
        erase_prob: probability of blanking a random rectangle (random erasing,
            Zhong et al. 2020), which stops the encoder relying on any one facial region.
        erase_area: largest area of that rectangle, as a fraction of the image.
    """

    enabled: bool = True
    max_shift: float = 0.08
    max_rotation: float = 8.0
    max_scale: float = 0.15
    brightness: float = 0.2
    contrast: float = 0.2
    hflip_prob: float = 0.5
    erase_prob: float = 0.0
    erase_area: float = 0.2

    def __post_init__(self) -> None:
        _check_range("max_shift", self.max_shift, 0.0, 0.5)
        _check_range("max_rotation", self.max_rotation, 0.0, 180.0)
        _check_range("max_scale", self.max_scale, 0.0, 1.0, hi_open=True)
        _check_range("brightness", self.brightness, 0.0)
        _check_range("contrast", self.contrast, 0.0, 1.0, hi_open=True)
        _check_range("hflip_prob", self.hflip_prob, 0.0, 1.0)
        _check_range("erase_prob", self.erase_prob, 0.0, 1.0)
        _check_range("erase_area", self.erase_area, 0.0, 1.0, lo_open=True)

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(enabled=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True)
class TrainConfig:
    """How a Siamese model is trained (see :func:`siamese.training.train`).

    Attributes:
        arch: ``"siamese"`` (one shared encoder), ``"pseudo"`` (two encoders, unshared
            weights) or ``"two-channel"`` (both images stacked, one similarity score).
        loss: ``"hadsell"`` (Hadsell et al. 2006, eq. 4) or ``"chopra"`` (Chopra et al.
            2005, eq. 8) for the embedding archs; ``"bce"`` (binary cross-entropy on the
            pair logit) for ``"two-channel"``, which has no distance to put in a
            contrastive loss.
        distance: pair distance for the contrastive losses and for validation.
        margin: the margin ``m`` of the Hadsell loss, or the bound ``Q`` of the Chopra
            loss. With normalised embeddings, L2 and cosine distances are at most 2.
        positive_margin: Hadsell loss only: genuine pairs closer than this are not
            pulled further together (0 = eq. 4 of the paper exactly).
        epochs: maximum number of epochs.
        batches_per_epoch: optimiser steps per epoch; ``None`` = enough P x K batches
            to show every training image about once.
        identities_per_batch: P, identities in a batch (clipped to the number available).
        images_per_identity: K, images of each of those identities.
        genuine_fraction: share of same-person pairs among the pairs of a batch
            (Chopra et al. use 0.5).
        pairs_per_batch: pairs scored per batch; ``None`` = every genuine pair of the
            batch plus enough impostor pairs for ``genuine_fraction``.
        hard_negatives: mine impostor pairs inside the batch: they are drawn from the
            ``hard_pool_factor`` x as many closest impostor pairs, instead of uniformly.
        hard_pool_factor: size of that pool relative to the impostors needed (>= 1;
            1 = strictly the hardest, larger = softer mining).
        mine_identities: from the second epoch on, build each batch from random
            identities together with their current look-alikes (nearest embedding
            centroids), so that in-batch mining sees the confusable people
            ("doppelganger mining"). Embedding archs only; ignored for two-channel.
        optimizer: ``"adamw"`` or ``"sgd"`` (Nesterov momentum 0.9).
        lr, weight_decay: learning rate and weight decay. AdamW decouples the decay
            and scales it by the learning rate (useful values ~0.01 to 0.1); SGD
            adds it to the gradient as an L2 penalty (useful values ~1e-4 to 1e-3).
        ema_decay: when > 0, validate and checkpoint an exponential moving average
            of the weights (Polyak averaging) with this decay per step, which
            smooths the step-to-step noise of small P x K batches. 0 = off.
        lr_schedule: ``"cosine"`` anneals the rate to zero over ``epochs``.
        seed: seeds the split, weights, sampling, augmentation and dropout.
        val_fraction: share of identities held out for validation (identity-disjoint);
            0 disables validation, early stopping and best-model selection.
        patience: stop after this many epochs without a better validation EER
            (0 = never stop early).
        augment: training-time augmentation.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        eval_batch_size: batch size for embedding validation images.
        members: train this many encoders, member ``i`` with seed ``seed + 1000 * i`` (its
            own weights, batches, pairs and augmentation; the same validation people), and
            embed with all of them side by side (:class:`siamese.ensemble.EnsembleEncoder`).
            Costs ``members`` x the training and embedding time. Embedding archs only: a
            two-channel net has no embedding to put side by side and trains once.
    """

    arch: Arch = "siamese"
    loss: LossName = "hadsell"
    distance: DistanceName = "l2"
    margin: float = 1.0
    positive_margin: float = 0.0
    epochs: int = 60
    batches_per_epoch: int | None = None
    identities_per_batch: int = 10
    images_per_identity: int = 5
    genuine_fraction: float = 0.5
    pairs_per_batch: int | None = None
    hard_negatives: bool = True
    hard_pool_factor: float = 2.0
    mine_identities: bool = False
    lr: float = 2e-3
    weight_decay: float = 5e-4
    optimizer: OptimizerName = "adamw"
    lr_schedule: Schedule = "cosine"
    ema_decay: float = 0.0
    seed: int = 0
    val_fraction: float = 0.25
    patience: int = 15
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"
    eval_batch_size: int = 256
    members: int = 3

    @property
    def effective_members(self) -> int:
        """Encoders actually trained: ``members``, or 1 for the two-channel arch."""
        return 1 if self.arch == "two-channel" else self.members

    def __post_init__(self) -> None:
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("distance", self.distance, DISTANCES)
        if self.arch == "two-channel" and self.loss != "bce":
            raise ValueError(
                f"arch 'two-channel' outputs a similarity score, not embeddings, so it is "
                f"trained with loss='bce'; got loss={self.loss!r}"
            )
        if self.arch != "two-channel" and self.loss == "bce":
            raise ValueError(
                f"loss 'bce' is for arch 'two-channel'; arch {self.arch!r} uses a contrastive "
                f"loss: 'hadsell' or 'chopra'"
            )
        _check_range("margin", self.margin, 0.0, lo_open=True)
        _check_range("positive_margin", self.positive_margin, 0.0, self.margin, hi_open=True)
        if self.positive_margin > 0 and self.loss != "hadsell":
            raise ValueError(
                f"positive_margin applies to the hadsell loss only; got loss={self.loss!r}"
            )
        _check_int("epochs", self.epochs, 1)
        if self.batches_per_epoch is not None:
            _check_int("batches_per_epoch", self.batches_per_epoch, 1)
        _check_int("identities_per_batch", self.identities_per_batch, 2)
        _check_int("images_per_identity", self.images_per_identity, 2)
        _check_range(
            "genuine_fraction", self.genuine_fraction, 0.0, 1.0, lo_open=True, hi_open=True
        )
        if self.pairs_per_batch is not None:
            _check_int("pairs_per_batch", self.pairs_per_batch, 2)
        _check_range("hard_pool_factor", self.hard_pool_factor, 1.0)
        _check_range("lr", self.lr, 0.0, lo_open=True)
        _check_range("weight_decay", self.weight_decay, 0.0)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _check_range("ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
        _check_int("seed", self.seed, 0)
        _check_range("val_fraction", self.val_fraction, 0.0, 1.0, hi_open=True)
        _check_int("patience", self.patience, 0)
        if not isinstance(self.augment, AugmentConfig):
            raise ValueError(f"augment must be an AugmentConfig; got {type(self.augment).__name__}")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}"
            )
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        _check_int("members", self.members, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(_known_fields(cls, data))
        if isinstance(data.get("augment"), dict):
            data["augment"] = AugmentConfig.from_dict(data["augment"])
        return cls(**data)
