"""Open-set identification metrics (NIST FRVT 1:N / ISO/IEC 19795-1 definitions).

Everything works on plain numpy arrays of *distances* (lower = more similar) summarising
the candidate lists returned by 1:N searches:

* **mated searches** (the probe's person is enrolled): ``mated_dist[i]`` is the distance
  of the best candidate of the probe's true identity and ``mated_rank[i]`` the 1-based
  rank of that identity among the *identities* in the candidate list, ordered by their
  best distance.  When the true identity is not in the (top-k) list both are ``inf``.
* **non-mated searches** (the person is not enrolled): ``nonmated_best[i]`` is the distance
  of the best candidate of any identity, ``inf`` when the list is empty.

Conventions, used everywhere in this module:

* **Threshold is inclusive.** A candidate is returned ("alarms") when its distance is
  ``<= threshold``; a score exactly at the threshold counts as a hit for mated searches and
  as a false positive for non-mated searches.
* ``inf`` means "no candidate": it never counts as returned, even at ``threshold = inf``.
* Ranks are computed with **pessimistic ties** by default (:func:`ranks_from_candidates`):
  another identity at exactly the mated distance is ranked ahead of the true identity, so
  tied scores never flatter rank-1 or the CMC.

Figures:

* ``FPIR(T) = #{non-mated searches with a candidate at distance <= T} / #non-mated``
* ``FNIR(T, R) = #{mated searches whose mate is NOT returned at rank <= R with distance
  <= T} / #mated``;  ``DIR(T, R) = 1 - FNIR(T, R)`` (detection and identification rate).
* ``CMC(r) = #{mated searches with rank <= r} / #mated`` (closed set, no threshold);
  ``rank1 = CMC(1)``.

Verification figures (DET, EER, TAR@FAR) use the same ``<=`` convention, see
:mod:`siamese.metrics`, whose :func:`~siamese.metrics.eer` is re-exported here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from siamese.metrics import Roc, eer, roc

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FAR_TARGETS",
    "DEFAULT_FPIR_TARGETS",
    "DEFAULT_TARGET_FPIR",
    "DirFpirCurve",
    "OperatingPoint",
    "cmc",
    "det_curve",
    "dir_at",
    "dir_at_fpir",
    "dir_key",
    "dir_fpir_curve",
    "eer",
    "fnir_at",
    "fpir_at",
    "nonmated_best_from_candidates",
    "operating_points",
    "per_identity_errors",
    "rank1",
    "rate_label",
    "ranks_from_candidates",
    "tar_at_far",
    "tar_key",
    "threshold_at_far",
    "threshold_at_fpir",
]

#: The FPIR an operating threshold is set for unless the user says otherwise (1 %): the
#: default of ``calibrate``, ``evaluate``, the demo and the report, and their headline figure.
DEFAULT_TARGET_FPIR = 0.01
#: FPIR operating points reported by default: 0.1 %, 1 %, 10 %.
DEFAULT_FPIR_TARGETS: tuple[float, ...] = (0.001, DEFAULT_TARGET_FPIR, 0.1)
#: FAR operating points of the TAR@FAR figures reported by default: 0.1 %, 1 %.
DEFAULT_FAR_TARGETS: tuple[float, ...] = (0.001, 0.01)


def rate_label(rate: float) -> str:
    """A rate as people read it: 0.01 -> ``1%``."""
    return f"{rate * 100:g}%"


def dir_key(target_fpir: float) -> str:
    """The figure key of DIR (rank 1) at an FPIR: ``dir@fpir=1%``."""
    return f"dir@fpir={rate_label(target_fpir)}"


def tar_key(target_far: float) -> str:
    """The figure key of TAR at a FAR: ``tar@far=0.1%``."""
    return f"tar@far={rate_label(target_far)}"


Ties = Literal["pessimistic", "optimistic"]


# --------------------------------------------------------------------------- validation


def _scores(
    name: str, values: Any, *, allow_inf: bool = True, allow_empty: bool = False
) -> np.ndarray:
    """1-D float64 copy of ``values``; rejects NaN and -inf (and +inf unless allowed)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of distances, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: at least one search is needed")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    if np.isnan(out).any():
        raise ValueError(f"{name} contains NaN; use inf for 'no candidate returned'")
    if np.isneginf(out).any():
        raise ValueError(f"{name} contains -inf distances")
    if not allow_inf and np.isinf(out).any():
        raise ValueError(f"{name} contains infinite distances")
    return out


def _precision(values: Any) -> type[np.floating]:
    """Float type thresholds are computed in: the input's own, so casting is exact."""
    dtype = np.asarray(values).dtype
    return dtype.type if dtype.kind == "f" else np.float64


def _mated(mated_dist: Any, mated_rank: Any) -> tuple[np.ndarray, np.ndarray]:
    dist = _scores("mated_dist", mated_dist)
    ranks = _ranks("mated_rank", mated_rank)
    if dist.shape != ranks.shape:
        raise ValueError(
            f"mated_dist and mated_rank must have one entry per mated search, "
            f"got {dist.shape[0]} and {ranks.shape[0]}"
        )
    return dist, ranks


def _ranks(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of ranks, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: at least one mated search is needed")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    if np.isnan(out).any() or (out < 1).any():
        raise ValueError(f"{name} must be 1-based ranks >= 1, with inf when the mate is absent")
    return out


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold is NaN")
    return t


def _check_rank(rank: int) -> int:
    if int(rank) != rank or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank}")
    return int(rank)


def _check_target(name: str, target: float) -> float:
    t = float(target)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must be a rate in [0, 1] (e.g. 0.01 for 1 %), got {target}")
    return t


# ------------------------------------------------------------------ search summaries


def ranks_from_candidates(
    candidate_dist: np.ndarray,
    candidate_ids: np.ndarray,
    true_ids: np.ndarray,
    ties: Ties = "pessimistic",
    pad_id: Any = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Mated distance and rank of each probe's true identity from top-k candidate lists.

    Args:
        candidate_dist: ``[N, K]`` distances of the K nearest gallery *templates* per
            probe (one identity may appear several times; its best distance counts).
        candidate_ids: ``[N, K]`` identity of each candidate.  Entries equal to ``pad_id``
            (FAISS pads short lists with id -1) or with a non-finite distance are ignored.
        true_ids: ``[N]`` identity of each probe.
        ties: ``"pessimistic"`` (default): other identities whose best distance equals the
            mated distance are ranked *ahead* of the true identity, i.e.
            ``rank = 1 + #{others with d < d_mate} + #{others with d == d_mate}``;
            ``"optimistic"`` ranks them behind it: ``rank = 1 + #{others with d < d_mate}``.

    Returns:
        ``(mated_dist, mated_rank)``, float64 ``[N]``; both ``inf`` when the true identity is
        not in the candidate list.
    """
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    dist, ids, valid = _candidates(candidate_dist, candidate_ids, pad_id)
    true_ids = np.asarray(true_ids)
    if true_ids.shape != (dist.shape[0],):
        raise ValueError(f"true_ids must have shape ({dist.shape[0]},), got {true_ids.shape}")
    mated_dist = np.full(dist.shape[0], np.inf)
    mated_rank = np.full(dist.shape[0], np.inf)
    for i in range(dist.shape[0]):
        row_ok = valid[i]
        is_mate = row_ok & (ids[i] == true_ids[i])
        if not is_mate.any():
            continue
        d_mate = dist[i][is_mate].min()
        others = row_ok & ~is_mate
        # Best distance per other identity: sort by distance, keep first occurrence.
        o_dist, o_ids = dist[i][others], ids[i][others]
        order = np.argsort(o_dist, kind="stable")
        _, first = np.unique(o_ids[order], return_index=True)
        best_others = o_dist[order][first]
        ahead = np.count_nonzero(best_others < d_mate)
        if ties == "pessimistic":
            ahead += np.count_nonzero(best_others == d_mate)
        mated_dist[i] = d_mate
        mated_rank[i] = 1 + ahead
    return mated_dist, mated_rank


def nonmated_best_from_candidates(
    candidate_dist: np.ndarray, candidate_ids: np.ndarray, pad_id: Any = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Best candidate of each non-mated search: ``(best_dist [N], best_id [N])``.

    Padded / non-finite candidates are ignored (see :func:`ranks_from_candidates`); a
    search with no valid candidate gets distance ``inf`` and id ``pad_id``.  Among tied
    best candidates the first in list order is reported.
    """
    dist, ids, valid = _candidates(candidate_dist, candidate_ids, pad_id)
    masked = np.where(valid, dist, np.inf)
    col = np.argmin(masked, axis=1)
    rows = np.arange(dist.shape[0])
    best = masked[rows, col]
    keep_dtype = ids.dtype.kind in "iu" and isinstance(pad_id, int | np.integer)
    best_ids = ids[rows, col].astype(ids.dtype if keep_dtype else object)
    best_ids[~np.isfinite(best)] = pad_id
    return best, best_ids


def _candidates(
    candidate_dist: np.ndarray, candidate_ids: np.ndarray, pad_id: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dist = np.asarray(candidate_dist, dtype=np.float64)
    ids = np.asarray(candidate_ids)
    if dist.ndim != 2 or ids.shape != dist.shape:
        raise ValueError(
            "candidate_dist and candidate_ids must both be [N, K] arrays, "
            f"got {dist.shape} and {ids.shape}"
        )
    if np.isnan(dist).any():
        raise ValueError("candidate_dist contains NaN")
    valid = np.isfinite(dist)
    # Only compare against the pad id when the kinds match: comparing strings with -1
    # is meaningless (and warns in numpy).
    if pad_id is not None and (
        (ids.dtype.kind in "iu" and isinstance(pad_id, int | np.integer))
        or (ids.dtype.kind in "OUS" and isinstance(pad_id, str))
    ):
        valid &= ids != pad_id
    return dist, ids, valid


# -------------------------------------------------------------------------- figures


def fpir_at(threshold: float, nonmated_best: np.ndarray) -> float:
    """False positive identification rate at ``threshold``.

    ``FPIR(T) = #{non-mated searches with best distance <= T} / #non-mated searches``.
    Inclusive: a non-mated search whose best distance equals ``T`` *is* a false positive.
    Searches with no candidate (``inf``) never are.
    """
    t = _check_threshold(threshold)
    s = _scores("nonmated_best", nonmated_best)
    return float(np.count_nonzero((s <= t) & np.isfinite(s)) / s.size)


def fnir_at(
    threshold: float, mated_dist: np.ndarray, mated_rank: np.ndarray, rank: int = 1
) -> float:
    """False negative identification rate at ``threshold`` and rank ``rank``.

    ``FNIR(T, R) = #{mated searches NOT (rank <= R and distance <= T)} / #mated``.
    Inclusive: a mate at distance exactly ``T`` (and rank <= R) is found.  ``T = inf``
    gives the closed-set miss rate ``1 - CMC(R)``.
    """
    t = _check_threshold(threshold)
    r = _check_rank(rank)
    dist, ranks = _mated(mated_dist, mated_rank)
    hit = (ranks <= r) & (dist <= t) & np.isfinite(dist)
    return float(1.0 - np.count_nonzero(hit) / dist.size)


def dir_at(
    threshold: float, mated_dist: np.ndarray, mated_rank: np.ndarray, rank: int = 1
) -> float:
    """Detection and identification rate ``DIR(T, R) = 1 - FNIR(T, R)``."""
    return 1.0 - fnir_at(threshold, mated_dist, mated_rank, rank)


def threshold_at_fpir(target: float, nonmated_best: np.ndarray) -> float:
    """Largest threshold whose FPIR on ``nonmated_best`` is ``<= target`` (calibration).

    With N non-mated searches at most ``k = floor(target * N)`` may alarm.  Let ``s`` be the
    sorted finite best distances; FPIR is a right-continuous step function of T, so every
    T in ``[s[k-1], s[k])`` gives FPIR ``<= k/N`` and the largest such threshold is the
    float just below ``s[k]`` (``numpy.nextafter`` in the input's float precision, so the
    value survives a round trip through that dtype; casting it to a *lower* precision may
    round it up onto ``s[k]``).

    Ties: all searches at distance ``s[k]`` are rejected together, so when ``s[k]`` is tied
    with scores below it the realised FPIR is *below* the target rather than above it; the
    realised FPIR never exceeds the target.  When ``k`` covers every finite score the
    answer is ``inf`` (accept everything).  ``target = 0`` returns a threshold just below
    the smallest non-mated distance.
    """
    tgt = _check_target("target", target)
    s = np.sort(_scores("nonmated_best", nonmated_best))
    n = s.size
    finite = s[np.isfinite(s)]
    k = _allowed_count(tgt, n)
    if k >= finite.size:
        return math.inf
    ftype = _precision(nonmated_best)
    return float(np.nextafter(ftype(finite[k]), ftype(-np.inf)))


def _allowed_count(target: float, n: int) -> int:
    """Largest k with k / n <= target, robust to float rounding of target * n."""
    k = int(math.floor(target * n))
    while k + 1 <= n and (k + 1) / n <= target:
        k += 1
    while k > 0 and k / n > target:
        k -= 1
    return k


@dataclass(frozen=True)
class OperatingPoint:
    """One calibrated operating point of an open-set search."""

    target_fpir: float
    threshold: float
    fpir: float  # realised on the non-mated searches used for calibration
    fnir: float
    dir: float
    rank: int

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def operating_points(
    targets: Iterable[float],
    mated_dist: np.ndarray,
    mated_rank: np.ndarray,
    nonmated_best: np.ndarray,
    rank: int = 1,
) -> list[OperatingPoint]:
    """Calibrate a threshold per FPIR target (:func:`threshold_at_fpir`) and evaluate it."""
    points = []
    for target in targets:
        thr = threshold_at_fpir(target, nonmated_best)
        fnir = fnir_at(thr, mated_dist, mated_rank, rank)
        points.append(
            OperatingPoint(
                target_fpir=float(target),
                threshold=thr,
                fpir=fpir_at(thr, nonmated_best),
                fnir=fnir,
                dir=1.0 - fnir,
                rank=_check_rank(rank),
            )
        )
    return points


def dir_at_fpir(
    targets: Iterable[float],
    mated_dist: np.ndarray,
    mated_rank: np.ndarray,
    nonmated_best: np.ndarray,
    rank: int = 1,
) -> dict[float, float]:
    """DIR at the threshold calibrated for each FPIR target: ``{target: DIR}``.

    The thresholds (and realised FPIR) are available from :func:`operating_points`.
    """
    return {
        p.target_fpir: p.dir
        for p in operating_points(targets, mated_dist, mated_rank, nonmated_best, rank)
    }


@dataclass(frozen=True)
class DirFpirCurve:
    """DIR and FPIR at every distinct threshold (for plotting DIR against FPIR).

    ``thresholds[0] = -inf`` is the "return nothing" point (FPIR 0, DIR 0); each further
    threshold is a distinct finite distance seen in the mated or non-mated scores.
    """

    thresholds: np.ndarray
    fpir: np.ndarray  # non-decreasing
    dir: np.ndarray  # non-decreasing
    rank: int


def dir_fpir_curve(
    mated_dist: np.ndarray, mated_rank: np.ndarray, nonmated_best: np.ndarray, rank: int = 1
) -> DirFpirCurve:
    """DIR(T, rank) against FPIR(T) over all thresholds T (inclusive ``<=``)."""
    r = _check_rank(rank)
    dist, ranks = _mated(mated_dist, mated_rank)
    s = _scores("nonmated_best", nonmated_best)
    hits = np.sort(dist[(ranks <= r) & np.isfinite(dist)])
    alarms = np.sort(s[np.isfinite(s)])
    thresholds = np.concatenate([[-np.inf], np.unique(np.concatenate([hits, alarms]))])
    # side="right" counts scores <= T, the inclusive convention.
    fpir = np.searchsorted(alarms, thresholds, side="right") / s.size
    dir_ = np.searchsorted(hits, thresholds, side="right") / dist.size
    return DirFpirCurve(thresholds=thresholds, fpir=fpir, dir=dir_, rank=r)


def cmc(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """Cumulative match characteristic ``CMC[r - 1] = #{rank <= r} / #mated``, r = 1..max_rank.

    Closed set: no threshold.  Ties are resolved where ranks are computed
    (:func:`ranks_from_candidates`, pessimistic by default); fractional ranks (e.g.
    mid-rank tie handling) are allowed and count at ``rank <= r``; ``inf`` (mate not in
    the list) never counts.
    """
    r = _check_rank(max_rank)
    arr = _ranks("ranks", ranks)
    counts = np.searchsorted(np.sort(arr), np.arange(1, r + 1), side="right")
    return counts / arr.size


def rank1(ranks: np.ndarray) -> float:
    """Rank-1 identification rate, ``CMC(1)``."""
    return float(cmc(ranks, 1)[0])


# ----------------------------------------------------------------------- verification


def det_curve(genuine: np.ndarray, impostor: np.ndarray) -> Roc:
    """DET curve of a verifier: FAR (FMR) and FRR (FNMR) at every distinct threshold.

    Accept when distance ``<= threshold``.  Delegates to :func:`siamese.metrics.roc`, so
    the first point is "accept nothing" (FAR 0, FRR 1).  Distances must be finite.
    """
    return roc(genuine, impostor)


def threshold_at_far(target: float, impostor: np.ndarray) -> float:
    """Largest verification threshold with FAR ``<= target`` (same rule and tie
    handling as :func:`threshold_at_fpir`, applied to impostor distances)."""
    _scores("impostor", impostor, allow_inf=False)
    return threshold_at_fpir(target, impostor)


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """True accept rate ``#{genuine <= T} / #genuine`` at ``T = threshold_at_far(far)``."""
    _check_target("far", far)
    g = _scores("genuine", genuine, allow_inf=False)
    thr = threshold_at_far(far, impostor)
    return float(np.count_nonzero(g <= thr) / g.size)


# -------------------------------------------------------------------- per identity


def per_identity_errors(
    threshold: float,
    mated_ids: Sequence[Any] | np.ndarray,
    mated_dist: np.ndarray,
    mated_rank: np.ndarray,
    nonmated_best: np.ndarray | None = None,
    nonmated_best_ids: Sequence[Any] | np.ndarray | None = None,
    rank: int = 1,
) -> dict[str, list[Any]]:
    """Error counts per enrolled identity, as columns (``pandas.DataFrame(result)``).

    Columns: ``identity``; ``mated_searches`` (mated probes of that person); ``misses``
    (those not returned at rank ``<= rank`` with distance ``<= threshold``, i.e. FNIR
    errors); ``miss_rate``; ``false_accepts`` (non-mated searches whose best candidate,
    at distance ``<= threshold``, was this identity, i.e. FPIR errors, pinned on the
    identity that attracted them); ``mean_mated_dist`` (mean finite mated distance, NaN
    when none).  Rows are sorted by ``misses + false_accepts`` descending, then identity.
    """
    t = _check_threshold(threshold)
    r = _check_rank(rank)
    dist, ranks = _mated(mated_dist, mated_rank)
    ids = np.asarray(mated_ids, dtype=object)
    if ids.shape != dist.shape:
        raise ValueError(
            f"mated_ids must have one entry per mated search ({dist.size}), got {ids.shape}"
        )
    missed = ~((ranks <= r) & (dist <= t) & np.isfinite(dist))

    table: dict[Any, dict[str, Any]] = {}

    def row(identity: Any) -> dict[str, Any]:
        return table.setdefault(
            identity,
            {"mated_searches": 0, "misses": 0, "false_accepts": 0, "dist_sum": 0.0, "dist_n": 0},
        )

    for identity, d, miss in zip(ids.tolist(), dist.tolist(), missed.tolist(), strict=True):
        entry = row(identity)
        entry["mated_searches"] += 1
        entry["misses"] += int(miss)
        if math.isfinite(d):
            entry["dist_sum"] += d
            entry["dist_n"] += 1

    if (nonmated_best is None) != (nonmated_best_ids is None):
        raise ValueError("pass both nonmated_best and nonmated_best_ids, or neither")
    if nonmated_best is not None and nonmated_best_ids is not None:
        s = _scores("nonmated_best", nonmated_best, allow_empty=True)
        nm_ids = np.asarray(nonmated_best_ids, dtype=object)
        if nm_ids.shape != s.shape:
            raise ValueError(
                f"nonmated_best_ids must have one entry per non-mated search ({s.size}), "
                f"got {nm_ids.shape}"
            )
        for identity, d in zip(nm_ids.tolist(), s.tolist(), strict=True):
            if math.isfinite(d) and d <= t:
                row(identity)["false_accepts"] += 1

    def sort_key(item: tuple[Any, dict[str, Any]]) -> tuple[int, str]:
        identity, e = item
        return (-(e["misses"] + e["false_accepts"]), str(identity))

    columns: dict[str, list[Any]] = {
        "identity": [],
        "mated_searches": [],
        "misses": [],
        "miss_rate": [],
        "false_accepts": [],
        "mean_mated_dist": [],
    }
    for identity, e in sorted(table.items(), key=sort_key):
        columns["identity"].append(identity)
        columns["mated_searches"].append(e["mated_searches"])
        columns["misses"].append(e["misses"])
        columns["miss_rate"].append(
            e["misses"] / e["mated_searches"] if e["mated_searches"] else math.nan
        )
        columns["false_accepts"].append(e["false_accepts"])
        columns["mean_mated_dist"].append(e["dist_sum"] / e["dist_n"] if e["dist_n"] else math.nan)
    return columns
