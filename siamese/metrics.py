"""Verification metrics over pair distances (lower distance = more similar).

Everything here works on plain numpy arrays of *distances*: a genuine pair is two
images of the same person, an impostor pair two images of different people. A
verifier accepts a pair when its distance is ``<= threshold``.

Open-set identification metrics live in :mod:`siamese.openset`; they may build on
:func:`eer` and :func:`roc`, whose signatures are kept stable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.5, 0.95)


@dataclass(frozen=True)
class Roc:
    """False accept / false reject rates at every distinct threshold.

    ``thresholds[0]`` is the smallest observed distance and is paired with the
    "accept nothing" point (FAR=0, FRR=1): a threshold just below the smallest
    distance. Every later entry ``i`` accepts all pairs with distance
    ``<= thresholds[i]``, so ties are accepted or rejected together.
    """

    thresholds: np.ndarray  # float64 [T+1]
    far: np.ndarray  # float64 [T+1], non-decreasing
    frr: np.ndarray  # float64 [T+1], non-increasing


def _as_distances(name: str, values: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty: EER needs at least one genuine and one impostor pair")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite distances")
    return arr


def roc(genuine: np.ndarray, impostor: np.ndarray) -> Roc:
    """ROC of a distance-based verifier over all unique thresholds.

    Args:
        genuine: distances of same-person pairs, shape ``[G]``.
        impostor: distances of different-person pairs, shape ``[I]``.

    Returns:
        :class:`Roc` with one point per unique distance plus the "accept nothing" point.
    """
    g = np.sort(_as_distances("genuine", genuine))
    i = np.sort(_as_distances("impostor", impostor))
    thresholds = np.unique(np.concatenate([g, i]))
    # side="right" counts distances <= t, so tied distances move together.
    accepted_g = np.searchsorted(g, thresholds, side="right")
    accepted_i = np.searchsorted(i, thresholds, side="right")
    far = np.concatenate([[0.0], accepted_i / i.size])
    frr = np.concatenate([[1.0], 1.0 - accepted_g / g.size])
    thr = np.concatenate([[thresholds[0]], thresholds])
    return Roc(thresholds=thr, far=far, frr=frr)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the distance threshold at which it occurs.

    The ROC is taken over all unique thresholds (ties handled exactly, see
    :func:`roc`). FRR falls and FAR rises with the threshold; the EER is read where
    the two curves cross, linearly interpolating between the two ROC points that
    bracket the crossing (and the threshold with it). When FAR == FRR holds exactly
    on a run of thresholds, e.g. perfectly separated sets at EER 0, the returned
    threshold is the middle of that run, which is the most robust operating point.

    Args:
        genuine: distances of same-person pairs, shape ``[G]``, ``G >= 1``.
        impostor: distances of different-person pairs, shape ``[I]``, ``I >= 1``.

    Returns:
        ``(eer, threshold)``, ``eer`` in ``[0, 1]`` (0.5 when the two sets are identical).
    """
    g = np.sort(_as_distances("genuine", genuine))
    i = np.sort(_as_distances("impostor", impostor))
    curve = roc(g, i)
    # Decide where FRR == FAR from integer counts: in floating point 1 - 2/3 != 1/3,
    # which would turn an exact tie into a spurious interpolation.
    thr_unique = curve.thresholds[1:]
    rejected_g = np.concatenate([[g.size], g.size - np.searchsorted(g, thr_unique, side="right")])
    accepted_i = np.concatenate([[0], np.searchsorted(i, thr_unique, side="right")])
    diff_int = rejected_g.astype(np.int64) * i.size - accepted_i.astype(np.int64) * g.size
    idx = int(np.argmax(diff_int <= 0))  # first point at or past the crossing; last is < 0
    if diff_int[idx] == 0:
        last = idx
        while last + 1 < diff_int.size and diff_int[last + 1] == 0:
            last += 1
        rate = float(curve.far[idx])
        lo = curve.thresholds[idx]
        # The exact region extends up to (not including) the next threshold.
        hi = curve.thresholds[last + 1] if last + 1 < diff_int.size else curve.thresholds[last]
        return rate, float((lo + hi) / 2.0)
    # idx >= 1 because the first point (accept nothing) has FRR - FAR = 1 > 0.
    d0 = float(diff_int[idx - 1])
    d1 = float(diff_int[idx])
    alpha = d0 / (d0 - d1)
    rate = curve.far[idx - 1] + alpha * (curve.far[idx] - curve.far[idx - 1])
    threshold = curve.thresholds[idx - 1] + alpha * (
        curve.thresholds[idx] - curve.thresholds[idx - 1]
    )
    return float(rate), float(threshold)


def distance_quantiles(
    distances: np.ndarray, quantiles: Sequence[float] = DEFAULT_QUANTILES
) -> dict[str, float]:
    """Quantiles of a set of distances, keyed ``"p5"``, ``"p50"``, ``"p95"`` ...

    Args:
        distances: any shape; flattened.
        quantiles: fractions in ``[0, 1]``.
    """
    arr = _as_distances("distances", distances)
    for q in quantiles:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} is outside [0, 1]")
    values = np.quantile(arr, list(quantiles))
    return {_quantile_key(q): float(v) for q, v in zip(quantiles, values, strict=True)}


def _quantile_key(q: float) -> str:
    pct = q * 100.0
    return f"p{pct:g}"


def pair_distances_from_matrix(
    dist: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split the upper triangle of a square distance matrix into genuine and impostor pairs.

    Args:
        dist: ``[N, N]`` distances between N samples (the diagonal is ignored).
        labels: ``[N]`` identity labels.

    Returns:
        ``(genuine, impostor)`` 1-D float64 arrays over all unordered pairs ``i < j``.
    """
    dist = np.asarray(dist)
    labels = np.asarray(labels)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"dist must be a square [N, N] matrix, got shape {dist.shape}")
    if labels.shape != (dist.shape[0],):
        raise ValueError(f"labels must have shape ({dist.shape[0]},), got {labels.shape}")
    iu, ju = np.triu_indices(dist.shape[0], k=1)
    same = labels[iu] == labels[ju]
    values = dist[iu, ju].astype(np.float64)
    return values[same], values[~same]


@dataclass(frozen=True)
class VerificationReport:
    """Verification figures over a set of pairs (distances, lower = more similar)."""

    eer: float
    threshold: float
    genuine_quantiles: dict[str, float]
    impostor_quantiles: dict[str, float]
    n_genuine: int
    n_impostor: int


def verification_report(
    genuine: np.ndarray,
    impostor: np.ndarray,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> VerificationReport:
    """EER, its threshold and distance quantiles of both pair populations."""
    rate, thr = eer(genuine, impostor)
    return VerificationReport(
        eer=rate,
        threshold=thr,
        genuine_quantiles=distance_quantiles(genuine, quantiles),
        impostor_quantiles=distance_quantiles(impostor, quantiles),
        n_genuine=int(np.size(genuine)),
        n_impostor=int(np.size(impostor)),
    )
