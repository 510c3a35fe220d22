"""A pretrained face network as the Siamese encoder: dlib's face ResNet, adapted to a user's people.

One network is applied to both images of a pair (shared weights), as in Chopra, Hadsell &
LeCun (2005); here its body is dlib's ResNet (:mod:`siamese.dlib_resnet`, read from dlib's own
``.dat`` file). The contrastive loss (Hadsell et al. 2006, eq. 4) adapts it to a user's people
on identity-aware P x K batches with hard negatives (:func:`siamese.sampling.select_pairs`), in
one of two modes (:data:`MODES`):

* ``"head"``: a small residual head on top of the frozen network,
  ``d -> d + W d + b`` with ``W``, ``b`` zero at start, trained on the descriptors, which are
  computed once (:func:`train_head`);
* ``"last-stages"``: the network's last two levels (``alevel1``, ``alevel0``) and its fc
  fine-tuned at a low learning rate over the frozen trunk's activations, which are computed
  once (:func:`train_stages`; :data:`~siamese.dlib_resnet.LAST_STAGES_FROM`).

Either starts at the pretrained network itself (zero-shot) and moves away from it only as far as
the loss asks. A checkpoint (:func:`save_checkpoint`) holds what was trained (or nothing:
zero-shot), its configuration and the sha256 of the body's ``.dat`` file; :func:`load_encoder`
rebuilds the encoder from both files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from siamese.config import TUNE_MODES
from siamese.distances import get_distance
from siamese.dlib_resnet import (
    DLIB_MEAN_RGB,
    EMBEDDING_DIM,
    INPUT_SIZE,
    LAST_STAGES_FROM,
    DlibFaceResNet,
    fold_for_inference,
    load_dlib_resnet,
)
from siamese.losses import build_loss
from siamese.sampling import IdentityBatchSampler, select_pairs

logger = logging.getLogger(__name__)

#: What a checkpoint of this module says it is.
KIND = "dlib-resnet"
#: The ways training adapts the pretrained network.
MODES = TUNE_MODES
#: Learning rate per mode when the configuration gives none: the head starts from zero weights,
#: the last stages from dlib's own, which a large step would wreck.
DEFAULT_LR = {"head": 1e-3, "last-stages": 3e-6}


def _check_input(x: Tensor) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
        raise ValueError(
            f"expected (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) RGB in [0, 1], got {tuple(x.shape)}"
        )


def _dlib_mean() -> Tensor:
    return torch.tensor(DLIB_MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)


def _dlib_input(x: Tensor, mean: Tensor) -> Tensor:
    """RGB in [0, 1] -> input_rgb_image_sized's ``(pixel - mean) / 256``, shape checked."""
    _check_input(x)
    return (x * 255.0 - mean) / 256.0


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
    """dlib's ResNet with an optional head; takes (N, 3, 150, 150) RGB in [0, 1].

    ``flip_average``: each chip's descriptor is the mean of the chip's and its mirror image's
    (test-time flip), at twice the cost. On celeba_wild's unseen people it lowered the EER from
    2.57% to 2.43% and raised TAR at FAR 0.1% from 0.886 to 0.905 (BENCHMARKS.md, head search).
    """

    mean: Tensor

    def __init__(
        self,
        body: DlibFaceResNet,
        head: ResidualHead | None = None,
        *,
        flip_average: bool = False,
    ) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.flip_average = bool(flip_average)
        self.register_buffer("mean", _dlib_mean(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        inp = _dlib_input(x, self.mean)
        d = self.body(inp)
        if self.flip_average:
            d = (d + self.body(torch.flip(inp, dims=(3,)))) / 2
        return d if self.head is None else self.head(d)


class DlibTrunk(nn.Module):
    """The network up to block ``until`` (exclusive): RGB in [0, 1] -> flat activations.

    What :func:`train_stages` trains on: the frozen part is run once per image.
    """

    mean: Tensor

    def __init__(self, body: DlibFaceResNet, until: int = LAST_STAGES_FROM) -> None:
        super().__init__()
        self.body = body
        self.until = until
        self.register_buffer("mean", _dlib_mean(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.body.trunk(_dlib_input(x, self.mean), self.until).flatten(1)


def trunk_shape(until: int = LAST_STAGES_FROM) -> tuple[int, int, int]:
    """(C, H, W) of :class:`DlibTrunk`'s activations before flattening."""
    with torch.no_grad():
        out = DlibFaceResNet().trunk(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE), until)
    c, h, w = out.shape[1:]
    return int(c), int(h), int(w)


def top_parameter_names(body: DlibFaceResNet, start: int = LAST_STAGES_FROM) -> list[str]:
    """The parameters of blocks ``start..`` and the fc, in ``body``'s own naming."""
    prefixes = tuple(f"blocks.{i}." for i in range(start, len(body.blocks))) + ("fc.",)
    return [name for name, _ in body.named_parameters() if name.startswith(prefixes)]


class StagesTop(nn.Module):
    """Blocks ``start..`` of ``body`` and its fc over the trunk's activations (N, C*H*W)."""

    def __init__(self, body: DlibFaceResNet, start: int = LAST_STAGES_FROM) -> None:
        super().__init__()
        self.body = body
        self.start = start
        self.shape = trunk_shape(start)
        trainable = set(top_parameter_names(body, start))
        for name, p in body.named_parameters():
            p.requires_grad_(name in trainable)

    def forward(self, h: Tensor) -> Tensor:
        return self.body.top(h.view(-1, *self.shape), self.start)

    def trained_state(self) -> dict[str, Tensor]:
        """What fine-tuning changed: the top's parameters, named as in the body."""
        keep = set(top_parameter_names(self.body, self.start))
        return {k: v.detach().cpu() for k, v in self.body.state_dict().items() if k in keep}


@dataclass(frozen=True)
class TuneConfig:
    """How the pretrained network is adapted (:data:`MODES`); the trunk stays frozen."""

    mode: str = "head"
    epochs: int = 30
    loss: str = "hadsell"
    distance: str = "l2"
    # dlib's descriptors: same person ~0.3-0.5 apart, others ~0.8-1.1; m / 2 = 0.6 is the
    # threshold dlib itself recommends, so the untrained default threshold stays dlib's.
    margin: float = 1.2
    positive_margin: float = 0.0  # Hadsell: genuine pairs closer than this cost nothing
    lr: float | None = None  # None: DEFAULT_LR[mode]
    weight_decay: float = 1e-3
    identities_per_batch: int = 32
    images_per_identity: int = 4
    genuine_fraction: float = 0.5
    hard_pool_factor: float = 2.0  # impostors from the 2x hardest candidates of each batch
    batches_per_epoch: int | None = None  # default: images / batch size, at least 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.margin <= 0 or (self.lr is not None and self.lr <= 0):
            raise ValueError(f"margin and lr must be > 0, got {self.margin} and {self.lr}")

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.mode] if self.lr is None else self.lr

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lr": self.learning_rate}


@dataclass
class TuneResult:
    module: nn.Module  # the trained ResidualHead or StagesTop
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    seconds: float = 0.0


def _train_contrastive(
    module: nn.Module,
    params: Iterable[nn.Parameter],
    inputs: Tensor,
    labels: np.ndarray,
    config: TuneConfig,
    on_epoch: Callable[[int, float], None] | None,
) -> TuneResult:
    """The contrastive loss over ``module(inputs[batch])`` on P x K batches, hard negatives.

    ``inputs`` lives on the device to train on; on CUDA the forward runs in bfloat16 autocast.
    """
    if inputs.shape[0] != labels.shape[0]:
        raise ValueError(f"inputs [N, ...] and labels [N] disagree: {inputs.shape}, {labels.shape}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    distance = get_distance(config.distance)
    loss_fn = build_loss(config.loss, distance, config.margin, config.positive_margin)
    sampler = IdentityBatchSampler(
        labels, config.identities_per_batch, config.images_per_identity, rng
    )
    batches = config.batches_per_epoch or max(10, labels.size // sampler.batch_size)
    opt = torch.optim.AdamW(list(params), lr=config.learning_rate, weight_decay=config.weight_decay)
    device = inputs.device
    amp = device.type == "cuda"
    result = TuneResult(module)
    start = time.perf_counter()
    module.train()
    for epoch in range(1, config.epochs + 1):
        total = 0.0
        for _ in range(batches):
            idx = sampler.sample()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = module(inputs[torch.as_tensor(idx, device=device)]).float()

            def scorer(a: np.ndarray, b: np.ndarray, out: Tensor = out) -> np.ndarray:
                return distance(out[a], out[b]).detach().cpu().numpy()

            pairs = select_pairs(
                labels[idx],
                genuine_fraction=config.genuine_fraction,
                rng=rng,
                hard_scorer=scorer,
                hard_pool_factor=config.hard_pool_factor,
            )
            same = torch.as_tensor(pairs.same, device=device)
            left = torch.as_tensor(pairs.left, device=device)
            right = torch.as_tensor(pairs.right, device=device)
            loss = loss_fn(out[left], out[right], same)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        result.losses.append(total / batches)
        if on_epoch is not None:
            on_epoch(epoch, result.losses[-1])
    result.seconds = time.perf_counter() - start
    module.eval()
    return result


def train_head(
    descriptors: np.ndarray,
    labels: np.ndarray,
    config: TuneConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TuneResult:
    """Train a :class:`ResidualHead` on frozen descriptors ``[N, d]`` with identity ``labels``."""
    x = torch.as_tensor(np.asarray(descriptors, dtype=np.float32))
    if x.dim() != 2:
        raise ValueError(f"descriptors must be [N, d], got {tuple(x.shape)}")
    torch.manual_seed(config.seed)
    head = ResidualHead(x.shape[1])
    return _train_contrastive(head, head.parameters(), x, np.asarray(labels), config, on_epoch)


def train_stages(
    body: DlibFaceResNet,
    activations: np.ndarray | Tensor,
    labels: np.ndarray,
    config: TuneConfig,
    on_epoch: Callable[[int, float], None] | None = None,
    device: torch.device | None = None,
) -> TuneResult:
    """Fine-tune ``body``'s last stages (in place) on the trunk's activations ``[N, C*H*W]``.

    ``body`` must be unfolded (:func:`~siamese.dlib_resnet.load_dlib_resnet`): its affine
    layers train with the convolutions. The result's module is a :class:`StagesTop`.
    """
    device = device or torch.device("cpu")
    h = torch.as_tensor(np.asarray(activations, dtype=np.float32)).to(device)
    top = StagesTop(body.to(device), LAST_STAGES_FROM)
    if h.dim() != 2 or h.shape[1] != int(np.prod(top.shape)):
        raise ValueError(
            f"activations must be [N, {int(np.prod(top.shape))}] (the trunk's {top.shape}), "
            f"got {tuple(h.shape)}"
        )
    params = [p for p in body.parameters() if p.requires_grad]
    result = _train_contrastive(top, params, h, np.asarray(labels), config, on_epoch)
    body.to("cpu").requires_grad_(False)
    return result


def save_checkpoint(
    path: Path,
    *,
    backbone_sha256: str,
    head: ResidualHead | None,
    meta: dict[str, Any],
    stages: StagesTop | None = None,
    flip_average: bool = False,
) -> None:
    """What was trained (a head, fine-tuned last stages, or nothing: zero-shot), the body's
    checksum, whether descriptors average the mirrored chip's, and what trained it."""
    payload = {
        "kind": KIND,
        "backbone_sha256": backbone_sha256,
        "flip_average": bool(flip_average),
        "head": None if head is None else head.state_dict(),
        "stages": None
        if stages is None
        else {"start": stages.start, "state": stages.trained_state()},
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
    payload.setdefault("stages", None)  # written before the last-stages mode existed
    payload.setdefault("flip_average", False)  # written before the test-time flip existed
    return payload


def apply_stages(body: DlibFaceResNet, stages: dict[str, Any], source: Path) -> None:
    """Load fine-tuned last stages into an unfolded ``body``; ValueError when they do not fit."""
    state = stages["state"]
    expected = set(top_parameter_names(body, int(stages["start"])))
    if set(state) != expected:
        raise ValueError(
            f"{source}: the fine-tuned stages do not match the network "
            f"({len(set(state) ^ expected)} parameters differ); register the model again"
        )
    body.load_state_dict(state, strict=False)


def load_encoder(checkpoint: Path, backbone: Path, *, inference: bool = True) -> DlibFaceEncoder:
    """Rebuild the encoder: the body from dlib's ``.dat`` file, what was trained from the
    checkpoint.

    ``inference`` folds the body's affine layers into its convolutions (channels_last).
    """
    payload = read_checkpoint(checkpoint)
    body = load_dlib_resnet(backbone)
    if payload["stages"] is not None:
        apply_stages(body, payload["stages"], checkpoint)
    if inference:
        body = fold_for_inference(body)
    head = None
    if payload["head"] is not None:
        head = ResidualHead()
        head.load_state_dict(payload["head"])
    encoder = DlibFaceEncoder(body, head, flip_average=payload["flip_average"]).eval()
    for p in encoder.parameters():
        p.requires_grad_(not inference)
    return encoder
