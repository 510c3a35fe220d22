"""A pretrained face network as the Siamese encoder: dlib's face ResNet, plus a trained head.

One network is applied to both images of a pair (shared weights), as in Chopra, Hadsell &
LeCun (2005); here its body is dlib's ResNet (:mod:`siamese.dlib_resnet`, read from dlib's own
``.dat`` file) and what the contrastive loss adapts to a user's people is a small head on top:

    x (N, 3, 150, 150) in [0, 1] RGB  ->  ResNet  ->  d (N, 128)  ->  d + W d + b

``W`` and ``b`` start at zero, so an untrained head is the pretrained network itself (zero-shot)
and training moves away from it only as far as the loss asks. The head is trained with the
contrastive loss (Hadsell et al. 2006, eq. 4) on identity-aware P x K batches with hard
negatives (:func:`siamese.sampling.select_pairs`), over the frozen body's descriptors, which
are computed once: the body is never run during head training.

A checkpoint (:func:`save_checkpoint`) holds the head, its training configuration and the
sha256 of the body's ``.dat`` file; :func:`load_encoder` rebuilds the encoder from both files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from siamese.distances import get_distance
from siamese.dlib_resnet import (
    DLIB_MEAN_RGB,
    EMBEDDING_DIM,
    INPUT_SIZE,
    DlibFaceResNet,
    fold_for_inference,
    load_dlib_resnet,
)
from siamese.losses import build_loss
from siamese.sampling import IdentityBatchSampler, select_pairs

logger = logging.getLogger(__name__)

#: What a checkpoint of this module says it is.
KIND = "dlib-resnet"


class ResidualHead(nn.Module):
    """``d -> d + W d + b`` with ``W``, ``b`` zero at start: the identity until trained."""

    def __init__(self, dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, d: Tensor) -> Tensor:
        """(N, dim) -> (N, dim)."""
        return d + self.linear(d)


class DlibFaceEncoder(nn.Module):
    """dlib's ResNet with an optional head; takes (N, 3, 150, 150) RGB in [0, 1]."""

    def __init__(self, body: DlibFaceResNet, head: ResidualHead | None = None) -> None:
        super().__init__()
        self.body = body
        self.head = head
        mean = torch.tensor(DLIB_MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"expected (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) RGB in [0, 1], got {tuple(x.shape)}"
            )
        # input_rgb_image_sized's (pixel - mean) / 256, from pixels given in [0, 1].
        d = self.body((x * 255.0 - self.mean) / 256.0)
        return d if self.head is None else self.head(d)


@dataclass(frozen=True)
class HeadConfig:
    """How the head is trained (the body stays frozen)."""

    epochs: int = 30
    loss: str = "hadsell"
    distance: str = "l2"
    # dlib's descriptors: same person ~0.3-0.5 apart, others ~0.8-1.1; m / 2 = 0.6 is the
    # threshold dlib itself recommends, so the untrained default threshold stays dlib's.
    margin: float = 1.2
    lr: float = 1e-3
    weight_decay: float = 1e-3
    identities_per_batch: int = 32
    images_per_identity: int = 4
    genuine_fraction: float = 0.5
    hard_pool_factor: float = 2.0  # impostors from the 2x hardest candidates of each batch
    batches_per_epoch: int | None = None  # default: images / batch size, at least 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.margin <= 0 or self.lr <= 0:
            raise ValueError(f"margin and lr must be > 0, got {self.margin} and {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HeadResult:
    head: ResidualHead
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    seconds: float = 0.0


def train_head(
    descriptors: np.ndarray,
    labels: np.ndarray,
    config: HeadConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> HeadResult:
    """Train a :class:`ResidualHead` on frozen descriptors ``[N, d]`` with identity ``labels``."""
    x = torch.as_tensor(np.asarray(descriptors, dtype=np.float32))
    labels = np.asarray(labels)
    if x.dim() != 2 or x.shape[0] != labels.shape[0]:
        raise ValueError(f"descriptors [N, d] and labels [N] disagree: {x.shape}, {labels.shape}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    head = ResidualHead(x.shape[1])
    distance = get_distance(config.distance)
    loss_fn = build_loss(config.loss, distance, config.margin)
    sampler = IdentityBatchSampler(
        labels, config.identities_per_batch, config.images_per_identity, rng
    )
    batches = config.batches_per_epoch or max(10, labels.size // sampler.batch_size)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    result = HeadResult(head)
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        total = 0.0
        for _ in range(batches):
            idx = sampler.sample()
            out = head(x[idx])

            def scorer(a: np.ndarray, b: np.ndarray, out: Tensor = out) -> np.ndarray:
                return distance(out[a], out[b]).detach().numpy()

            pairs = select_pairs(
                labels[idx],
                genuine_fraction=config.genuine_fraction,
                rng=rng,
                hard_scorer=scorer,
                hard_pool_factor=config.hard_pool_factor,
            )
            same = torch.as_tensor(pairs.same)
            loss = loss_fn(out[pairs.left], out[pairs.right], same)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        result.losses.append(total / batches)
        if on_epoch is not None:
            on_epoch(epoch, result.losses[-1])
    result.seconds = time.perf_counter() - start
    head.eval()
    return result


def save_checkpoint(
    path: Path, *, backbone_sha256: str, head: ResidualHead | None, meta: dict[str, Any]
) -> None:
    """The head (or none: zero-shot), the body's checksum and what trained it."""
    payload = {
        "kind": KIND,
        "backbone_sha256": backbone_sha256,
        "head": None if head is None else head.state_dict(),
        "meta": meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise ValueError(f"{path} is not a {KIND} checkpoint")
    return payload


def load_encoder(checkpoint: Path, backbone: Path, *, inference: bool = True) -> DlibFaceEncoder:
    """Rebuild the encoder: the body from dlib's ``.dat`` file, the head from the checkpoint.

    ``inference`` folds the body's affine layers into its convolutions (channels_last).
    """
    payload = read_checkpoint(checkpoint)
    body = load_dlib_resnet(backbone)
    if inference:
        body = fold_for_inference(body)
    head = None
    if payload["head"] is not None:
        head = ResidualHead()
        head.load_state_dict(payload["head"])
    encoder = DlibFaceEncoder(body, head).eval()
    for p in encoder.parameters():
        p.requires_grad_(not inference)
    return encoder
