"""Pair networks: Siamese (shared weights), pseudo-Siamese (unshared) and two-channel.

* :class:`SiameseNet` applies *one* encoder to both images: a single parameter
  set, so both branches' gradients accumulate on the same tensors (Bromley et al.
  1993; Chopra et al. 2005).
* :class:`PseudoSiameseNet` has two encoders of the same shape with their own
  weights, for when probe and gallery images differ in kind.
* :class:`TwoChannelNet` stacks the two images as channels of one input and
  outputs a similarity logit (Zagoruyko & Komodakis, CVPR 2015). It has no
  per-image embedding, so it cannot fill an index; it re-ranks an index's top-k
  candidates instead (:func:`rerank`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from siamese.config import ARCHS, EncoderConfig
from siamese.encoder import Encoder
from siamese.ensemble import EnsembleEncoder

logger = logging.getLogger(__name__)


def _check_pair(x1: Tensor, x2: Tensor) -> None:
    if x1.shape != x2.shape:
        raise ValueError(
            f"the two inputs of a pair must have the same shape; got {tuple(x1.shape)} "
            f"and {tuple(x2.shape)}"
        )


class SiameseNet(nn.Module):
    """One encoder applied to both inputs.

    ``forward(x1, x2)``: two ``[B, C, H, W]`` batches -> two ``[B, D]`` embeddings.
    """

    def __init__(self, encoder: Encoder | EnsembleEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    @classmethod
    def from_config(cls, config: EncoderConfig) -> SiameseNet:
        return cls(Encoder(config))

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        _check_pair(x1, x2)
        # One pass over the concatenation: the same weights (and, in training, the
        # same batch-norm statistics) for both branches.
        z = self.encoder(torch.cat([x1, x2], dim=0))
        return z[: x1.shape[0]], z[x1.shape[0] :]

    def embed(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, D]``."""
        return self.encoder(x)


class PseudoSiameseNet(nn.Module):
    """Two encoders of the same architecture with unshared weights.

    ``forward(x1, x2)``: ``x1`` goes through ``encoder_a``, ``x2`` through
    ``encoder_b``; returns two ``[B, D]`` embeddings in a common space.
    """

    def __init__(self, encoder_a: Encoder, encoder_b: Encoder) -> None:
        super().__init__()
        if encoder_a is encoder_b:
            raise ValueError(
                "PseudoSiameseNet needs two distinct encoders; use SiameseNet to share"
            )
        if encoder_a.embedding_dim != encoder_b.embedding_dim:
            raise ValueError(
                f"both encoders must embed into the same space; got dims "
                f"{encoder_a.embedding_dim} and {encoder_b.embedding_dim}"
            )
        self.encoder_a = encoder_a
        self.encoder_b = encoder_b

    @classmethod
    def from_config(cls, config: EncoderConfig) -> PseudoSiameseNet:
        return cls(Encoder(config), Encoder(config))

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        _check_pair(x1, x2)
        return self.encoder_a(x1), self.encoder_b(x2)

    def embed(self, x: Tensor, branch: int = 0) -> Tensor:
        """Embed with branch 0 (``encoder_a``, e.g. gallery) or 1 (``encoder_b``, e.g. probe)."""
        if branch not in (0, 1):
            raise ValueError(f"branch must be 0 or 1; got {branch!r}")
        return (self.encoder_a if branch == 0 else self.encoder_b)(x)


class TwoChannelNet(nn.Module):
    """Both images stacked along the channel axis -> one similarity logit.

    ``forward(x1, x2)``: two ``[B, C, H, W]`` batches -> ``[B]`` logits, higher =
    more likely the same person. The trunk is an :class:`Encoder` over ``2C``
    channels (unnormalised), followed by a ReLU and a linear layer to one score.
    The raw network is not symmetric in its inputs; :meth:`similarity` averages
    both orders, which is what validation and :func:`rerank` use.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        # The trunk's "embedding" is a hidden layer here; normalising it would only
        # cap the logit's range.
        self.trunk = Encoder(replace(config, normalize=False), in_channels=2 * config.in_channels)
        self.score = nn.Sequential(nn.ReLU(), nn.Linear(config.embedding_dim, 1))

    @classmethod
    def from_config(cls, config: EncoderConfig) -> TwoChannelNet:
        return cls(config)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        _check_pair(x1, x2)
        return self.score(self.trunk(torch.cat([x1, x2], dim=1))).squeeze(1)

    def similarity(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Order-independent logit ``[B]``: the mean of ``f(x1, x2)`` and ``f(x2, x1)``."""
        _check_pair(x1, x2)
        both = self.forward(torch.cat([x1, x2], dim=0), torch.cat([x2, x1], dim=0))
        return 0.5 * (both[: x1.shape[0]] + both[x1.shape[0] :])


PairNet = SiameseNet | PseudoSiameseNet | TwoChannelNet


def build_net(arch: str, config: EncoderConfig) -> PairNet:
    """Build the network of a :class:`~siamese.config.TrainConfig` ``arch`` name."""
    if arch == "siamese":
        return SiameseNet.from_config(config)
    if arch == "pseudo":
        return PseudoSiameseNet.from_config(config)
    if arch == "two-channel":
        return TwoChannelNet.from_config(config)
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(map(repr, ARCHS))}")


def embedding_encoder(net: nn.Module) -> Encoder | EnsembleEncoder | None:
    """The encoder that embeds gallery images for an index, or None for two-channel nets."""
    if isinstance(net, SiameseNet):
        return net.encoder
    if isinstance(net, PseudoSiameseNet):
        return net.encoder_a
    return None


@torch.no_grad()
def rerank(
    net: TwoChannelNet,
    probe: Tensor,
    candidates: Tensor,
    candidate_ids: Sequence[int],
    *,
    batch_size: int = 64,
) -> list[tuple[int, float]]:
    """Re-rank an index's top-k candidates for one probe by the two-channel score.

    Args:
        net: a trained :class:`TwoChannelNet` (switched to eval mode for the call).
        probe: ``[C, H, W]`` preprocessed probe image.
        candidates: ``[K, C, H, W]`` preprocessed candidate images.
        candidate_ids: ``K`` ids (e.g. database keys) of the candidates.
        batch_size: pairs scored per forward pass.

    Returns:
        ``(id, score)`` pairs sorted best first; ``score`` is the probability
        ``sigmoid(logit)`` that probe and candidate show the same person. Ties keep
        the input (index) order.
    """
    if not isinstance(net, TwoChannelNet):
        raise ValueError(f"rerank needs a TwoChannelNet; got {type(net).__name__}")
    if probe.ndim != 3:
        raise ValueError(f"probe must be one [C, H, W] image; got shape {tuple(probe.shape)}")
    if candidates.ndim != 4 or tuple(candidates.shape[1:]) != tuple(probe.shape):
        raise ValueError(
            f"candidates must be [K, {', '.join(map(str, probe.shape))}]; "
            f"got {tuple(candidates.shape)}"
        )
    if len(candidate_ids) != candidates.shape[0]:
        raise ValueError(
            f"got {len(candidate_ids)} candidate ids for {candidates.shape[0]} candidate images"
        )
    if candidates.shape[0] == 0:
        return []
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        scores: list[Tensor] = []
        for start in range(0, candidates.shape[0], batch_size):
            cand = candidates[start : start + batch_size].to(device)
            probes = probe.to(device).unsqueeze(0).expand_as(cand)
            scores.append(net.similarity(probes, cand).double().cpu())
        logits = torch.cat(scores)
    finally:
        net.train(was_training)
    # Rank by logit: float32 sigmoids of confident pairs saturate to 1.0 and would tie.
    probs = torch.sigmoid(logits).tolist()
    flat = logits.tolist()
    order = sorted(range(len(flat)), key=lambda i: -flat[i])  # sorted() is stable
    return [(int(candidate_ids[i]), float(probs[i])) for i in order]
