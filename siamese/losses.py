"""Pair losses for Siamese training.

Label convention: the papers write ``Y = 0`` for a genuine (same-person) pair and
``Y = 1`` for an impostor pair, and many write-ups flip it. To make the API
impossible to misread, every loss here takes a boolean tensor ``same``
(``True`` = same person); the paper's ``Y`` is ``~same``.

Both contrastive losses are ``nn.Module``\\ s whose distance is passed in
(:mod:`siamese.distances`), so one loss serves L1, L2 and cosine distances.
They reduce by the mean over pairs.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamese.distances import Distance

logger = logging.getLogger(__name__)

# Chopra et al. 2005, eq. 8: the constant of the impostor term's exponent.
CHOPRA_EXP_CONSTANT = 2.77


def _check_same(same: Tensor, n: int) -> None:
    if same.dtype != torch.bool:
        raise ValueError(
            f"`same` must be a bool tensor (True = same person); got dtype {same.dtype}"
        )
    if same.shape != (n,):
        raise ValueError(f"`same` must have shape ({n},); got {tuple(same.shape)}")


def _check_distance(d: Tensor) -> None:
    if d.ndim != 1:
        raise ValueError(f"distances must be a 1-D [B] tensor; got shape {tuple(d.shape)}")


class _DistanceLoss(nn.Module):
    def __init__(self, distance: Distance) -> None:
        super().__init__()
        if not isinstance(distance, Distance):
            raise ValueError(
                f"distance must be a siamese.distances.Distance (see get_distance); "
                f"got {type(distance).__name__}"
            )
        self.distance = distance

    def forward(self, a: Tensor, b: Tensor, same: Tensor) -> Tensor:
        """Loss of a batch of embedding pairs.

        Args:
            a: ``[B, D]`` embeddings of the first images.
            b: ``[B, D]`` embeddings of the second images.
            same: ``[B]`` bool, True where the two images show the same person.

        Returns:
            Scalar: the mean loss over the B pairs.
        """
        return self.from_distance(self.distance(a, b), same)

    def from_distance(self, d: Tensor, same: Tensor) -> Tensor:
        """Loss from precomputed pair distances ``d`` ``[B]`` (same rules as ``forward``)."""
        raise NotImplementedError


class HadsellContrastiveLoss(_DistanceLoss):
    """Contrastive loss of Hadsell, Chopra & LeCun, CVPR 2006, eq. 4.

    ``L = (1 - Y) * 1/2 * D^2 + Y * 1/2 * max(0, m - D)^2``

    with ``D`` the distance between the two embeddings, ``Y = 0`` for a genuine
    pair, ``Y = 1`` for an impostor pair (here ``Y = ~same``) and ``m > 0`` the
    margin beyond which impostor pairs no longer contribute.

    With ``positive_margin = p > 0`` the genuine term becomes
    ``1/2 * max(0, D - p)^2`` (the "double-margin" variant): genuine pairs closer
    than ``p`` are left alone instead of being collapsed onto one point, which
    with few training identities overfits less. ``p = 0`` (the default) is eq. 4
    exactly.

    Args:
        distance: the pair distance ``D`` (:func:`siamese.distances.get_distance`).
        margin: ``m``.
        positive_margin: ``p``, in ``[0, m)``.
    """

    def __init__(
        self, distance: Distance, margin: float = 1.0, positive_margin: float = 0.0
    ) -> None:
        super().__init__(distance)
        if not (isinstance(margin, int | float) and math.isfinite(margin) and margin > 0):
            raise ValueError(f"margin must be a finite number > 0; got {margin!r}")
        if not (
            isinstance(positive_margin, int | float)
            and math.isfinite(positive_margin)
            and 0 <= positive_margin < margin
        ):
            raise ValueError(
                f"positive_margin must be in [0, margin={margin}); got {positive_margin!r}"
            )
        self.margin = float(margin)
        self.positive_margin = float(positive_margin)

    def from_distance(self, d: Tensor, same: Tensor) -> Tensor:
        _check_distance(d)
        _check_same(same, d.shape[0])
        if self.positive_margin > 0:
            genuine = 0.5 * torch.clamp(d - self.positive_margin, min=0.0).pow(2)
        else:
            genuine = 0.5 * d.pow(2)
        impostor = 0.5 * torch.clamp(self.margin - d, min=0.0).pow(2)
        return torch.where(same, genuine, impostor).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, positive_margin={self.positive_margin}"


class ChopraContrastiveLoss(_DistanceLoss):
    """Contrastive loss of Chopra, Hadsell & LeCun, CVPR 2005, eq. 8.

    ``L = (1 - Y) * L_G(E) + Y * L_I(E)`` with ``L_G(E) = (2 / Q) * E^2`` and
    ``L_I(E) = 2 * Q * exp(-2.77 * E / Q)``,

    ``E`` the energy (distance) of the pair, ``Y = 0`` genuine, ``Y = 1`` impostor
    (here ``Y = ~same``) and ``Q`` the upper bound of ``E`` (the paper uses the L1
    distance; with L2-normalised embeddings, L2 and cosine distances are at most 2).

    Args:
        distance: the energy ``E`` (:func:`siamese.distances.get_distance`).
        q: ``Q``, the upper bound of the energy.
    """

    def __init__(self, distance: Distance, q: float = 2.0) -> None:
        super().__init__(distance)
        if not (isinstance(q, int | float) and math.isfinite(q) and q > 0):
            raise ValueError(f"q (the energy bound Q) must be a finite number > 0; got {q!r}")
        self.q = float(q)

    def from_distance(self, d: Tensor, same: Tensor) -> Tensor:
        _check_distance(d)
        _check_same(same, d.shape[0])
        genuine = (2.0 / self.q) * d.pow(2)
        impostor = 2.0 * self.q * torch.exp(-CHOPRA_EXP_CONSTANT * d / self.q)
        return torch.where(same, genuine, impostor).mean()

    def extra_repr(self) -> str:
        return f"q={self.q}"


class PairBCELoss(nn.Module):
    """Binary cross-entropy on pair logits, for the two-channel network.

    The two-channel network of Zagoruyko & Komodakis (CVPR 2015, Sec. 3) outputs one
    score per pair and is trained there with a hinge loss ``max(0, 1 - y * o)``;
    this is its smooth logistic counterpart, ``-[y log s(o) + (1 - y) log(1 - s(o))]``
    with ``y = same`` and ``s`` the sigmoid, whose probabilistic output also makes
    a natural distance ``1 - s(o)`` for EER computation.
    """

    def forward(self, logits: Tensor, same: Tensor) -> Tensor:
        """``logits`` ``[B]`` (higher = more alike), ``same`` ``[B]`` bool -> scalar mean loss."""
        _check_distance(logits)
        _check_same(same, logits.shape[0])
        return F.binary_cross_entropy_with_logits(logits, same.to(logits.dtype))


def build_loss(
    name: str, distance: Distance | None, margin: float, positive_margin: float = 0.0
) -> nn.Module:
    """Loss by :class:`~siamese.config.TrainConfig` name: ``"hadsell"``, ``"chopra"`` or ``"bce"``.

    ``margin`` is ``m`` for Hadsell and ``Q`` for Chopra (unused by ``"bce"``);
    ``positive_margin`` is used by Hadsell only.
    """
    if name == "hadsell":
        if distance is None:
            raise ValueError("the hadsell loss needs a distance")
        return HadsellContrastiveLoss(distance, margin, positive_margin)
    if name == "chopra":
        if distance is None:
            raise ValueError("the chopra loss needs a distance")
        return ChopraContrastiveLoss(distance, margin)
    if name == "bce":
        return PairBCELoss()
    raise ValueError(f"unknown loss {name!r}; choose 'hadsell', 'chopra' or 'bce'")
