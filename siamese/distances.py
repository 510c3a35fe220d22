"""Pair distances between embeddings: L1, L2 and cosine (1 - cos).

A :class:`Distance` is a small ``nn.Module`` handed to the losses, so one
contrastive loss serves every metric. Each offers a row-wise form for training
(``forward(a, b) -> [B]``) and a batched pairwise form for validation
(``pairwise(a, b) -> [N, M]``); :func:`pairwise_distances` is the numpy flavour.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

DISTANCE_NAMES: tuple[str, ...] = ("l2", "l1", "cosine")


def _check_rowwise(a: Tensor, b: Tensor) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            "expected two [B, D] tensors of the same shape; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_pairwise(a: Tensor, b: Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"expected [N, D] and [M, D] tensors; got {tuple(a.shape)} and {tuple(b.shape)}"
        )


class Distance(nn.Module):
    """Base class: a distance between embedding vectors (0 for identical vectors)."""

    name: str = ""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Row-wise distance: ``a``, ``b`` ``[B, D]`` -> ``[B]``."""
        raise NotImplementedError

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        """All-pairs distance: ``a`` ``[N, D]``, ``b`` ``[M, D]`` -> ``[N, M]``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.name


class L2Distance(Distance):
    """Euclidean distance ``||a - b||_2``.

    ``eps`` inside the square root keeps the gradient finite for identical vectors
    (d sqrt(x)/dx is infinite at 0, and 0 * inf would poison training with NaN).
    """

    name = "l2"

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0; got {eps!r}")
        self.eps = eps

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        _check_rowwise(a, b)
        return torch.sqrt((a - b).pow(2).sum(dim=1) + self.eps)

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        _check_pairwise(a, b)
        # The expanded |a|^2 + |b|^2 - 2ab form loses precision for near-identical
        # vectors; the [N, M, D] difference is exact and validation sets are small,
        # so compute it in chunks of rows.
        out = torch.empty(a.shape[0], b.shape[0], dtype=torch.result_type(a, b), device=a.device)
        chunk = max(1, 2**22 // max(1, b.shape[0] * a.shape[1]))
        for start in range(0, a.shape[0], chunk):
            diff = a[start : start + chunk, None, :] - b[None, :, :]
            out[start : start + chunk] = torch.sqrt(diff.pow(2).sum(dim=2) + self.eps)
        return out


class L1Distance(Distance):
    """Manhattan distance ``||a - b||_1`` (the energy E of Chopra et al. 2005)."""

    name = "l1"

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        _check_rowwise(a, b)
        return (a - b).abs().sum(dim=1)

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        _check_pairwise(a, b)
        return torch.cdist(a, b, p=1.0)


class CosineDistance(Distance):
    """Cosine distance ``1 - cos(a, b)``, in ``[0, 2]``."""

    name = "cosine"

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0; got {eps!r}")
        self.eps = eps

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        _check_rowwise(a, b)
        return 1.0 - F.cosine_similarity(a, b, dim=1, eps=self.eps)

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        _check_pairwise(a, b)
        an = a / a.norm(dim=1, keepdim=True).clamp_min(self.eps)
        bn = b / b.norm(dim=1, keepdim=True).clamp_min(self.eps)
        return 1.0 - an @ bn.T


_REGISTRY: dict[str, type[Distance]] = {
    "l2": L2Distance,
    "l1": L1Distance,
    "cosine": CosineDistance,
}


def get_distance(name: str) -> Distance:
    """Build a distance by name: ``"l1"``, ``"l2"`` or ``"cosine"``.

    Raises:
        ValueError: for any other name.
    """
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown distance {name!r}; choose one of {', '.join(map(repr, DISTANCE_NAMES))}"
        ) from None
    return cls()


def pairwise_distances(a: np.ndarray, b: np.ndarray, name: str = "l2") -> np.ndarray:
    """All-pairs distances between two sets of embeddings, in float64.

    Args:
        a: ``[N, D]`` embeddings.
        b: ``[M, D]`` embeddings.
        name: ``"l1"``, ``"l2"`` or ``"cosine"``.

    Returns:
        ``[N, M]`` float64 distance matrix.
    """
    dist = get_distance(name)
    ta = torch.as_tensor(np.asarray(a, dtype=np.float64))
    tb = torch.as_tensor(np.asarray(b, dtype=np.float64))
    with torch.no_grad():
        return dist.pairwise(ta, tb).numpy()
