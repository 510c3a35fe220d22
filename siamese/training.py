"""Training Siamese, pseudo-Siamese and two-channel networks on labelled face tensors.

:func:`train` splits the identities into disjoint training and validation sets
(:func:`split_identities`: no validation person is ever seen in training), draws
identity-aware P x K batches, scores pairs inside each batch with the configured
contrastive loss, and after every epoch measures verification on *all* pairs of
validation images: EER and the genuine / impostor distance quantiles. Progress
goes to an ``on_epoch(EpochReport)`` callback; the best epoch by validation EER is
checkpointed and training stops after ``patience`` epochs without improvement.

The checkpoint (:func:`load_checkpoint`) holds the weights, the optimizer state,
both configs as dicts, the epoch and the best metric, so a model is rebuilt from
the file alone.

Runs are deterministic for a seed on the CPU: the identity split, the batches,
the pairs, the augmentation and the initial weights all derive from
``TrainConfig.seed``; torch's global RNG (used by weight init and dropout) is
forked and seeded for the duration of the call so the caller's state is untouched.
On CUDA, training uses mixed precision (float16 autocast with a GradScaler).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from siamese.augment import augment, torch_generator
from siamese.config import EncoderConfig, TrainConfig
from siamese.device import resolve_device, uses_mixed_precision
from siamese.distances import Distance, get_distance
from siamese.encoder import Encoder
from siamese.ensemble import ENSEMBLE_CHECKPOINT_FORMAT, EnsembleEncoder
from siamese.losses import build_loss
from siamese.metrics import VerificationReport, pair_distances_from_matrix, verification_report
from siamese.nets import (
    PairNet,
    PseudoSiameseNet,
    SiameseNet,
    TwoChannelNet,
    build_net,
    embedding_encoder,
)
from siamese.sampling import (
    IdentityBatchSampler,
    distance_matrix_scorer,
    nearest_identities,
    select_pairs,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "EncoderConfig",
    "EpochReport",
    "TrainConfig",
    "TrainResult",
    "embed",
    "evaluate",
    "load_checkpoint",
    "split_identities",
    "train",
]

CHECKPOINT_FORMAT = "siamid.siamese.v1"

#: Two-channel hard mining scores at most this many impostor candidates per needed
#: impostor (each candidate costs a forward pass, unlike an embedding distance).
TWO_CHANNEL_CANDIDATES_PER_IMPOSTOR = 3


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did; handed to the ``on_epoch`` callback.

    ``val`` is ``None`` when training runs without validation (``val_fraction=0``).
    Distances for the two-channel arch are ``1 - sigmoid(score)``.
    """

    epoch: int  # 1-based
    epochs: int  # the configured maximum
    train_loss: float
    lr: float
    seconds: float  # this epoch, validation included
    elapsed: float  # since training started
    val: VerificationReport | None
    best_eer: float | None
    improved: bool
    member: int = 1  # 1-based member of an ensemble (TrainConfig.members)
    members: int = 1

    def line(self) -> str:
        """A one-line progress summary."""
        parts = [f"member {self.member}/{self.members}"] if self.members > 1 else []
        parts += [
            f"epoch {self.epoch:3d}/{self.epochs}",
            f"loss {self.train_loss:.4f}",
            f"lr {self.lr:.2e}",
        ]
        if self.val is not None:
            g, i = self.val.genuine_quantiles, self.val.impostor_quantiles
            parts.append(f"val EER {100 * self.val.eer:5.2f}% @ {self.val.threshold:.3f}")
            parts.append("gen " + "/".join(f"{v:.2f}" for v in g.values()))
            parts.append("imp " + "/".join(f"{v:.2f}" for v in i.values()))
        parts.append(f"{self.seconds:.1f}s")
        if self.improved:
            parts.append("*")
        return "  ".join(parts)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`. Validation figures are those of the best epoch."""

    best_eer: float | None
    best_threshold: float | None
    best_epoch: int
    genuine_quantiles: dict[str, float] | None
    impostor_quantiles: dict[str, float] | None
    epochs_run: int
    stopped_early: bool
    checkpoint_path: Path
    train_identities: list[int]
    val_identities: list[int]
    seconds: float
    history: list[EpochReport] = field(default_factory=list)
    member_eers: list[float | None] = field(default_factory=list)  # ensembles: each member's


@dataclass
class Checkpoint:
    """A model rebuilt from a checkpoint file (in eval mode)."""

    net: PairNet
    encoder_config: EncoderConfig
    train_config: TrainConfig
    epoch: int
    best_metric: float | None
    threshold: float | None
    train_identities: list[int]
    val_identities: list[int]
    optimizer_state: dict[str, Any]

    @property
    def encoder(self) -> Encoder | EnsembleEncoder | None:
        """The encoder that embeds images for an index (``None`` for two-channel nets)."""
        return embedding_encoder(self.net)

    @property
    def distance(self) -> str:
        """Name of the distance the model was trained and validated with."""
        return self.train_config.distance


def split_identities(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Identity-disjoint train / validation split, deterministic for a seed.

    Args:
        labels: ``[N]`` identity label per image.
        val_fraction: share of identities for validation (0 = no validation set).
            At least 2 identities go to each side when validating, since impostor
            pairs need two people.
        seed: seeds the permutation of identities.

    Returns:
        ``(train_ids, val_ids)``: sorted, disjoint arrays of identity labels.
    """
    ids = np.unique(np.asarray(labels))
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    if val_fraction == 0.0:
        return ids, ids[:0]
    if ids.size < 4:
        raise ValueError(
            f"an identity-disjoint validation split needs at least 4 identities (2 per side); "
            f"got {ids.size}: add identities or set val_fraction=0"
        )
    n_val = min(max(2, round(val_fraction * ids.size)), ids.size - 2)
    perm = np.random.default_rng(seed).permutation(ids)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _explicit_split(
    labels: np.ndarray, val_identities: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    ids = np.unique(labels)
    val = np.unique(np.asarray(val_identities, dtype=np.int64))
    unknown = np.setdiff1d(val, ids)
    if unknown.size:
        raise ValueError(f"val_identities {unknown.tolist()} do not occur in labels")
    train_ids = np.setdiff1d(ids, val)
    if val.size < 2 or train_ids.size < 2:
        raise ValueError(
            f"need at least 2 training and 2 validation identities; got {train_ids.size} "
            f"and {val.size}"
        )
    return train_ids, val


def _lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    if config.lr_schedule == "constant":
        return config.lr
    # Cosine annealing to zero at the last step of the last epoch.
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * step / max(1, total_steps)))


@torch.no_grad()
def embed(encoder: nn.Module, images: Tensor, batch_size: int = 256) -> np.ndarray:
    """Embed images with an encoder in eval mode.

    Args:
        encoder: an :class:`~siamese.encoder.Encoder` (or any ``[B, C, H, W] -> [B, D]``
            module); its training flag is restored afterwards.
        images: ``[N, C, H, W]`` preprocessed images, on any device.
        batch_size: images per forward pass.

    Returns:
        ``[N, D]`` float32 embeddings.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W]; got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        chunks = [
            encoder(images[s : s + batch_size].to(device)).float().cpu()
            for s in range(0, images.shape[0], batch_size)
        ]
    finally:
        encoder.train(was_training)
    if not chunks:
        return np.zeros((0, getattr(encoder, "embedding_dim", 0)), dtype=np.float32)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


@torch.no_grad()
def _two_channel_pair_distances(
    net: TwoChannelNet, images: Tensor, left: np.ndarray, right: np.ndarray, batch_size: int
) -> np.ndarray:
    """``1 - sigmoid(score)`` of pairs, in float64 (sigmoid(-s) avoids saturating to 0)."""
    device = next(net.parameters()).device
    out = []
    for s in range(0, left.size, batch_size):
        li = torch.from_numpy(left[s : s + batch_size])
        ri = torch.from_numpy(right[s : s + batch_size])
        logits = net.similarity(images[li].to(device), images[ri].to(device))
        out.append(torch.sigmoid(-logits.double()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


@torch.no_grad()
def evaluate(
    net: PairNet,
    images: Tensor,
    labels: np.ndarray,
    distance: str = "l2",
    batch_size: int = 256,
) -> VerificationReport:
    """Verification over all unordered pairs of ``images`` (eval mode).

    For Siamese nets the pair distance is ``distance`` between embeddings (for a
    pseudo-Siamese net, branch A of the first image against branch B of the
    second); for two-channel nets it is ``1 - sigmoid(score)``.

    Args:
        net: a pair network.
        images: ``[N, C, H, W]`` preprocessed images.
        labels: ``[N]`` identity labels.
        distance: ``"l2"``, ``"l1"`` or ``"cosine"`` (embedding nets only).
        batch_size: images (or pairs) per forward pass.
    """
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},); got {labels.shape}")
    was_training = net.training
    net.eval()
    try:
        if isinstance(net, TwoChannelNet):
            iu, ju = np.triu_indices(labels.size, k=1)
            d = _two_channel_pair_distances(net, images, iu, ju, batch_size)
            same = labels[iu] == labels[ju]
            genuine, impostor = d[same], d[~same]
        else:
            dist = get_distance(distance)
            if isinstance(net, PseudoSiameseNet):
                za = torch.from_numpy(embed(net.encoder_a, images, batch_size)).double()
                zb = torch.from_numpy(embed(net.encoder_b, images, batch_size)).double()
            elif isinstance(net, SiameseNet):
                za = zb = torch.from_numpy(embed(net.encoder, images, batch_size)).double()
            else:
                raise ValueError(f"cannot evaluate a {type(net).__name__}")
            genuine, impostor = pair_distances_from_matrix(dist.pairwise(za, zb).numpy(), labels)
    finally:
        net.train(was_training)
    return verification_report(genuine, impostor)


def _check_inputs(images: Tensor, labels: np.ndarray, encoder_config: EncoderConfig) -> np.ndarray:
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError("images must be a [N, C, H, W] tensor (see siamese.data.load_faces)")
    h, w = encoder_config.input_size
    expected = (encoder_config.in_channels, h, w)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"images have shape [N, {', '.join(map(str, images.shape[1:]))}] but the encoder "
            f"expects [N, {', '.join(map(str, expected))}]: "
            "preprocess them with the same EncoderConfig"
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point (preprocessed); got {images.dtype}")
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},); got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integers (see siamese.data.encode_labels); got {labels.dtype}"
        )
    return labels.astype(np.int64)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    # Atomic replace: a crash mid-save never leaves a truncated "best" model behind.
    os.replace(tmp, path)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild a trained network from a checkpoint written by :func:`train`.

    The file is read with ``weights_only=True``: it holds only tensors and plain
    Python data, so loading it runs no pickled code.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a siamid checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train a model first")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (CHECKPOINT_FORMAT, ENSEMBLE_CHECKPOINT_FORMAT):
        raise ValueError(
            f"{path} is not a siamid Siamese checkpoint ({CHECKPOINT_FORMAT} or "
            f"{ENSEMBLE_CHECKPOINT_FORMAT})"
        )
    encoder_config = EncoderConfig.from_dict(payload["encoder_config"])
    train_config = TrainConfig.from_dict(payload["train_config"])
    if fmt == ENSEMBLE_CHECKPOINT_FORMAT:
        net: PairNet = _ensemble_net(payload["members"], train_config.arch, encoder_config)
    else:
        net = build_net(train_config.arch, encoder_config)
        net.load_state_dict(payload["model_state"])
    net.to(map_location)
    net.eval()
    return Checkpoint(
        net=net,
        encoder_config=encoder_config,
        train_config=train_config,
        epoch=int(payload["epoch"]),
        best_metric=payload["best_metric"],
        threshold=payload.get("threshold"),
        train_identities=list(payload["train_identities"]),
        val_identities=list(payload["val_identities"]),
        optimizer_state=payload.get("optimizer_state", {}),
    )


def _ensemble_net(
    members: Sequence[dict[str, Any]], arch: str, encoder_config: EncoderConfig
) -> SiameseNet:
    """A SiameseNet over the members' embedding encoders (for pseudo-Siamese members: their
    first branch, the one that embeds gallery images)."""
    encoders = []
    for state in members:
        member = build_net(arch, encoder_config)
        member.load_state_dict(state["model_state"])
        enc = embedding_encoder(member)
        if enc is None:
            raise ValueError(f"arch {arch!r} has no encoder to put in an ensemble")
        encoders.append(enc)
    return SiameseNet(EnsembleEncoder(encoders))


class _Trainer:
    """One training run's state; :func:`train` is the public entry point."""

    def __init__(
        self,
        images: Tensor,
        labels: np.ndarray,
        config: TrainConfig,
        encoder_config: EncoderConfig,
        device: torch.device,
        val_identities: np.ndarray | None = None,
    ) -> None:
        self.config = config
        self.encoder_config = encoder_config
        self.device = device
        self.amp = uses_mixed_precision(device)
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch_generator(self.rng)

        if val_identities is None:
            self.train_ids, self.val_ids = split_identities(
                labels, config.val_fraction, config.seed
            )
        else:
            self.train_ids, self.val_ids = _explicit_split(labels, val_identities)
        train_mask = np.isin(labels, self.train_ids)
        self.train_images = images[torch.from_numpy(train_mask)].to(device)
        self.train_labels = labels[train_mask]
        self.val_images = images[torch.from_numpy(~train_mask)]
        self.val_labels = labels[~train_mask]
        if self.val_ids.size and not np.any(np.unique(self.val_labels, return_counts=True)[1] >= 2):
            raise ValueError(
                "no validation identity has two images, so there are no genuine validation pairs: "
                "add images per person or set val_fraction=0"
            )

        self.sampler = IdentityBatchSampler(
            self.train_labels, config.identities_per_batch, config.images_per_identity, self.rng
        )
        self.batches_per_epoch = config.batches_per_epoch or max(
            1, math.ceil(self.train_labels.size / self.sampler.batch_size)
        )
        self.net: PairNet = build_net(config.arch, encoder_config).to(device)
        self.distance: Distance | None = (
            None if config.arch == "two-channel" else get_distance(config.distance)
        )
        self.loss_fn = build_loss(config.loss, self.distance, config.margin, config.positive_margin)
        self.optimizer: torch.optim.Optimizer
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                self.net.parameters(),
                lr=config.lr,
                momentum=0.9,
                nesterov=True,
                weight_decay=config.weight_decay,
            )
        else:
            self.optimizer = torch.optim.AdamW(
                self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay
            )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        # The averaged copy is what is validated and saved; the raw net is what is trained.
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        if config.ema_decay > 0:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.net,
                multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay),
                use_buffers=True,
            )
        self.total_steps = config.epochs * self.batches_per_epoch
        self.step = 0

    # -- one optimisation step -------------------------------------------------
    def _embedding_loss(self, x: Tensor, batch_labels: np.ndarray) -> Tensor:
        cfg = self.config
        assert self.distance is not None
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            if isinstance(self.net, SiameseNet):
                za = zb = self.net.encoder(x)
            else:
                assert isinstance(self.net, PseudoSiameseNet)
                za, zb = self.net.encoder_a(x), self.net.encoder_b(x)
        # Distances and losses in float32 even under autocast: squared distances
        # and exp() are where float16 loses precision.
        za, zb = za.float(), zb.float()
        scorer = None
        if cfg.hard_negatives:
            with torch.no_grad():
                scorer = distance_matrix_scorer(self.distance.pairwise(za.detach(), zb.detach()))
        pairs = select_pairs(
            batch_labels,
            genuine_fraction=cfg.genuine_fraction,
            rng=self.rng,
            pairs_per_batch=cfg.pairs_per_batch,
            hard_scorer=scorer,
            hard_pool_factor=cfg.hard_pool_factor,
        )
        left = torch.from_numpy(pairs.left).to(self.device)
        right = torch.from_numpy(pairs.right).to(self.device)
        same = torch.from_numpy(pairs.same).to(self.device)
        return self.loss_fn(za[left], zb[right], same)

    def _two_channel_loss(self, x: Tensor, batch_labels: np.ndarray) -> Tensor:
        cfg = self.config
        net = self.net
        assert isinstance(net, TwoChannelNet)
        scorer = None
        if cfg.hard_negatives:

            def scorer(left: np.ndarray, right: np.ndarray) -> np.ndarray:
                # Eval mode: mining must not update batch-norm running statistics.
                net.eval()
                try:
                    with torch.autocast(
                        device_type=self.device.type, dtype=torch.float16, enabled=self.amp
                    ):
                        logits = net.similarity(
                            x[torch.from_numpy(left)], x[torch.from_numpy(right)]
                        )
                finally:
                    net.train()
                return (-logits.float()).cpu().numpy()

        # Rough count of impostors needed (pairs_per_batch, or as many as genuine pairs).
        n_pairs = cfg.pairs_per_batch or len(batch_labels) * cfg.images_per_identity
        pairs = select_pairs(
            batch_labels,
            genuine_fraction=cfg.genuine_fraction,
            rng=self.rng,
            pairs_per_batch=cfg.pairs_per_batch,
            hard_scorer=scorer,
            hard_pool_factor=cfg.hard_pool_factor,
            max_hard_candidates=TWO_CHANNEL_CANDIDATES_PER_IMPOSTOR * n_pairs,
        )
        left = torch.from_numpy(pairs.left)
        right = torch.from_numpy(pairs.right)
        # The net is not symmetric in its inputs: present each pair in a random order.
        swap = torch.rand(left.numel(), generator=self.generator) < 0.5
        left, right = torch.where(swap, right, left), torch.where(swap, left, right)
        same = torch.from_numpy(pairs.same).to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = net(x[left.to(self.device)], x[right.to(self.device)])
        return self.loss_fn(logits.float(), same)

    @torch.no_grad()
    def _update_identity_neighbours(self) -> None:
        """Doppelganger mining: rank training identities by centroid distance (eval mode)."""
        encoder = embedding_encoder(self.net)
        if encoder is None:
            return
        z = embed(encoder, self.train_images, self.config.eval_batch_size)
        self.sampler.set_neighbours(nearest_identities(z, self.train_labels, self.config.distance))

    def _train_epoch(self) -> tuple[float, float]:
        if self.config.mine_identities and self.step > 0:
            self._update_identity_neighbours()
        self.net.train()
        total, lr = 0.0, self.config.lr
        for _ in range(self.batches_per_epoch):
            lr = _lr_at(self.config, self.step, self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            idx = self.sampler.sample()
            x = augment(
                self.train_images[torch.from_numpy(idx).to(self.device)],
                self.config.augment,
                self.generator,
            )
            batch_labels = self.train_labels[idx]
            if self.config.arch == "two-channel":
                loss = self._two_channel_loss(x, batch_labels)
            else:
                loss = self._embedding_loss(x, batch_labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at step {self.step}: "
                    "lower the learning rate or check the inputs"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.net)
            total += float(loss.detach())
            self.step += 1
        return total / self.batches_per_epoch, lr

    @property
    def model(self) -> PairNet:
        """The network that is validated and checkpointed (the EMA copy when enabled)."""
        if self.ema is not None:
            return self.ema.module  # type: ignore[return-value]
        return self.net

    def validate(self) -> VerificationReport | None:
        if self.val_ids.size == 0:
            return None
        return evaluate(
            self.model,
            self.val_images,
            self.val_labels,
            distance=self.config.distance,
            batch_size=self.config.eval_batch_size,
        )

    def checkpoint_payload(self, epoch: int, report: VerificationReport | None) -> dict[str, Any]:
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return {
            "format": CHECKPOINT_FORMAT,
            "arch": self.config.arch,
            "model_state": state,
            "optimizer_state": self.optimizer.state_dict(),
            "encoder_config": asdict(self.encoder_config),
            "train_config": asdict(self.config),
            "epoch": epoch,
            "best_metric": None if report is None else report.eer,
            "best_metric_name": "val_eer",
            "threshold": None if report is None else report.threshold,
            "train_identities": [int(i) for i in self.train_ids],
            "val_identities": [int(i) for i in self.val_ids],
            "torch_version": str(torch.__version__),
        }


#: Member ``i`` of an ensemble trains with seed ``config.seed + MEMBER_SEED_STRIDE * i``.
MEMBER_SEED_STRIDE = 1000


def train(
    images: Tensor,
    labels: np.ndarray,
    config: TrainConfig,
    encoder_config: EncoderConfig,
    *,
    checkpoint_path: Path | str,
    on_epoch: Callable[[EpochReport], None] | None = None,
    val_identities: Sequence[int] | np.ndarray | None = None,
) -> TrainResult:
    """Train a pair network (or ``config.members`` of them) and checkpoint the best epoch.

    With ``config.members > 1`` (embedding archs), member ``i`` is trained exactly as a single
    network with seed ``config.seed + 1000 * i`` on the validation people of member 0, and the
    checkpoint holds all members (:func:`load_checkpoint` rebuilds them as one
    :class:`~siamese.ensemble.EnsembleEncoder`). The result's validation figures are the
    ensemble's; ``member_eers`` gives each member's.
    """
    members = config.effective_members
    if members == 1:
        return _train_one(
            images,
            labels,
            config,
            encoder_config,
            checkpoint_path=checkpoint_path,
            on_epoch=on_epoch,
            val_identities=val_identities,
        )
    checkpoint_path = Path(checkpoint_path)
    start = time.perf_counter()
    results: list[TrainResult] = []
    member_paths: list[Path] = []
    val = val_identities
    try:
        for i in range(members):
            path = checkpoint_path.with_name(f"{checkpoint_path.name}.member{i}")
            member_paths.append(path)

            def tagged(rep: EpochReport, i: int = i) -> None:
                if on_epoch is not None:
                    on_epoch(replace(rep, member=i + 1, members=members))

            result = _train_one(
                images,
                labels,
                replace(config, seed=config.seed + MEMBER_SEED_STRIDE * i, members=1),
                encoder_config,
                checkpoint_path=path,
                on_epoch=tagged,
                val_identities=val,
            )
            if i == 0 and result.val_identities:
                val = result.val_identities  # every member validates on the same people
            results.append(result)
        report = _write_ensemble(
            member_paths, checkpoint_path, config, encoder_config, images, labels, results[0]
        )
    finally:
        for path in member_paths:
            path.unlink(missing_ok=True)
    first = results[0]
    return TrainResult(
        best_eer=None if report is None else report.eer,
        best_threshold=None if report is None else report.threshold,
        best_epoch=max(r.best_epoch for r in results),
        genuine_quantiles=None if report is None else report.genuine_quantiles,
        impostor_quantiles=None if report is None else report.impostor_quantiles,
        epochs_run=max(r.epochs_run for r in results),  # per member, like best_epoch
        stopped_early=any(r.stopped_early for r in results),
        checkpoint_path=checkpoint_path,
        train_identities=first.train_identities,
        val_identities=first.val_identities,
        seconds=time.perf_counter() - start,
        history=[h for r in results for h in r.history],
        member_eers=[r.best_eer for r in results],
    )


def _write_ensemble(
    member_paths: Sequence[Path],
    checkpoint_path: Path,
    config: TrainConfig,
    encoder_config: EncoderConfig,
    images: Tensor,
    labels: np.ndarray,
    first: TrainResult,
) -> VerificationReport | None:
    """One checkpoint holding every member's best epoch; validates the ensemble."""
    states = []
    for path in member_paths:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state.pop("optimizer_state", None)  # not needed to embed; keeps the file small
        states.append(state)
    report = None
    if first.val_identities:
        net = _ensemble_net(states, config.arch, encoder_config)
        labels = np.asarray(labels)
        keep = np.isin(labels, first.val_identities)
        report = evaluate(
            net,
            images[torch.from_numpy(keep)],
            labels[keep],
            config.distance,
            config.eval_batch_size,
        )
    _save_checkpoint(
        checkpoint_path,
        {
            "format": ENSEMBLE_CHECKPOINT_FORMAT,
            "arch": config.arch,
            "members": states,
            "encoder_config": asdict(encoder_config),
            "train_config": asdict(config),
            "epoch": max(int(st["epoch"]) for st in states),
            "best_metric": None if report is None else report.eer,
            "best_metric_name": "val_eer",
            "threshold": None if report is None else report.threshold,
            "train_identities": list(first.train_identities),
            "val_identities": list(first.val_identities),
            "torch_version": str(torch.__version__),
        },
    )
    return report


def _train_one(
    images: Tensor,
    labels: np.ndarray,
    config: TrainConfig,
    encoder_config: EncoderConfig,
    *,
    checkpoint_path: Path | str,
    on_epoch: Callable[[EpochReport], None] | None = None,
    val_identities: Sequence[int] | np.ndarray | None = None,
) -> TrainResult:
    """Train one pair network and checkpoint its best epoch.

    Args:
        images: ``[N, C, H, W]`` preprocessed images (:func:`siamese.data.load_faces`).
        labels: ``[N]`` integer identity labels.
        config: training hyperparameters.
        encoder_config: the encoder architecture; must match ``images``' shape.
        checkpoint_path: where the best model is written (parents are created).
        on_epoch: called after each epoch with an :class:`EpochReport`.
        val_identities: explicit validation identities (e.g. one fold of an
            identity-wise cross-validation); all other identities train. ``None``
            splits by ``config.val_fraction`` and ``config.seed``
            (:func:`split_identities`).

    Returns:
        :class:`TrainResult`; the model itself is in the checkpoint
        (:func:`load_checkpoint`).
    """
    labels = _check_inputs(images, labels, encoder_config)
    checkpoint_path = Path(checkpoint_path)
    device = resolve_device(config.device)
    start = time.perf_counter()
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        trainer = _Trainer(
            images,
            labels,
            config,
            encoder_config,
            device,
            None if val_identities is None else np.asarray(val_identities),
        )
        logger.info(
            "training %s (%s loss, %s distance) on %d images of %d identities, validating on "
            "%d images of %d unseen identities; %d batches/epoch on %s%s",
            config.arch,
            config.loss,
            config.distance,
            trainer.train_labels.size,
            trainer.train_ids.size,
            trainer.val_labels.size,
            trainer.val_ids.size,
            trainer.batches_per_epoch,
            device,
            " with mixed precision" if trainer.amp else "",
        )
        history: list[EpochReport] = []
        best: VerificationReport | None = None
        best_epoch = 0
        stale = 0
        stopped_early = False
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            loss, lr = trainer._train_epoch()
            report = trainer.validate()
            improved = report is not None and (best is None or report.eer < best.eer)
            if improved or report is None:
                best, best_epoch, stale = (report if report is not None else best), epoch, 0
                _save_checkpoint(checkpoint_path, trainer.checkpoint_payload(epoch, report))
            else:
                stale += 1
            now = time.perf_counter()
            rep = EpochReport(
                epoch=epoch,
                epochs=config.epochs,
                train_loss=loss,
                lr=lr,
                seconds=now - t0,
                elapsed=now - start,
                val=report,
                best_eer=None if best is None else best.eer,
                improved=improved,
            )
            history.append(rep)
            # DEBUG: the caller's on_epoch decides what a person sees of every epoch.
            logger.debug("%s", rep.line())
            if on_epoch is not None:
                on_epoch(rep)
            if report is not None and config.patience and stale >= config.patience:
                logger.info(
                    "no better validation EER for %d epochs: stopping at epoch %d (best %d)",
                    stale,
                    epoch,
                    best_epoch,
                )
                stopped_early = True
                break
    seconds = time.perf_counter() - start
    return TrainResult(
        best_eer=None if best is None else best.eer,
        best_threshold=None if best is None else best.threshold,
        best_epoch=best_epoch,
        genuine_quantiles=None if best is None else best.genuine_quantiles,
        impostor_quantiles=None if best is None else best.impostor_quantiles,
        epochs_run=len(history),
        stopped_early=stopped_early,
        checkpoint_path=checkpoint_path,
        train_identities=[int(i) for i in trainer.train_ids],
        val_identities=[int(i) for i in trainer.val_ids],
        seconds=seconds,
        history=history,
    )
