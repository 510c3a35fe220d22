"""What an evaluation report is drawn from (:class:`ReportData`), and its headline figures
keyed as the report's table shows them (:func:`summary_figures`, :func:`figure_label`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.services.scoring import operating_threshold
from siamese import openset
from siamese.metrics import eer
from siamese.openset import DEFAULT_FAR_TARGETS as FAR_TARGETS
from siamese.openset import DEFAULT_FPIR_TARGETS as FPIR_TARGETS
from siamese.openset import DEFAULT_TARGET_FPIR, dir_key, tar_key

# Keys of the figures table, in display order, with labels and whether they are rates.
_FIXED_FIGURES: dict[str, tuple[str, bool]] = {
    "rank1": ("Rank-1 identification rate (closed set)", True),
    "rank5": ("Rank-5 identification rate (closed set)", True),
    "eer": ("Verification EER (probe photo vs claimed person's template)", True),
    "pair_eer": ("Verification EER over pairs of single photos", True),
    "eer_threshold": ("Distance threshold at EER", False),
    "threshold": ("Operating threshold (open set, accept distance <=)", False),
    "target_fpir": ("Target FPIR of the operating threshold", True),
    "fpir": ("Realised FPIR at the operating threshold", True),
    "fnir": ("Realised FNIR (rank 1) at the operating threshold", True),
    "dir": ("DIR (rank 1) at the operating threshold", True),
    "n_mated": ("Mated searches", False),
    "n_nonmated": ("Non-mated searches", False),
    "n_genuine": ("Genuine comparisons", False),
    "n_impostor": ("Impostor comparisons", False),
}


def figure_label(key: str) -> tuple[str, bool]:
    """Human label of a figure key and whether the value is a rate (shown in %)."""
    if key in _FIXED_FIGURES:
        return _FIXED_FIGURES[key]
    if key.startswith("dir@fpir="):
        return f"DIR (rank 1) at FPIR {key.split('=', 1)[1]}", True
    if key.startswith("tar@far="):
        return f"TAR at FAR {key.split('=', 1)[1]}", True
    return key, False


def figure_order() -> list[str]:
    keys = ["rank1", "rank5"]
    keys += [dir_key(t) for t in FPIR_TARGETS]
    keys += ["eer", "eer_threshold", "pair_eer"]
    keys += [tar_key(t) for t in FAR_TARGETS]
    keys += ["threshold", "target_fpir", "fpir", "fnir", "dir"]
    keys += ["n_mated", "n_nonmated", "n_genuine", "n_impostor"]
    return keys


def _array(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values if values is not None else [], dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"ReportData.{name} must be a 1-D array, got shape {arr.shape}")
    return arr


@dataclass
class ReportData:
    """The arrays a report is drawn from (distances: lower = more similar).

    ``genuine`` / ``impostor``: verification pair distances (DET, EER, TAR@FAR,
    histogram); may be empty.  ``mated_dist`` / ``mated_rank``: per mated search, the
    mate's best distance and 1-based rank (``inf`` when absent, see
    :mod:`siamese.openset`).  ``nonmated_best``: per non-mated search, the best distance
    (``inf`` for an empty list); may be empty (then no DIR/FPIR figures).
    ``threshold``: the open-set operating threshold; when ``None`` it is calibrated on
    ``nonmated_best`` for ``target_fpir`` (default 1 %).  ``cmc``: precomputed CMC
    (index r-1 = rank r), else computed from ``mated_rank`` up to ``max_rank``.
    ``folds``: one figures dict per cross-validation fold (keys as returned by
    :func:`summary_figures`), summarised as mean ± std.  ``mated_ids`` /
    ``nonmated_best_ids``: identity of each mated probe / of each non-mated search's
    best candidate, for the per-identity error table; or pass ``per_identity`` columns
    (as from :func:`siamese.openset.per_identity_errors`) directly.
    """

    genuine: np.ndarray
    impostor: np.ndarray
    mated_dist: np.ndarray
    mated_rank: np.ndarray
    nonmated_best: np.ndarray
    threshold: float | None = None
    target_fpir: float | None = None
    cmc: np.ndarray | None = None
    max_rank: int = 10
    folds: list[dict[str, float]] = field(default_factory=list)
    mated_ids: Sequence[Any] | None = None
    nonmated_best_ids: Sequence[Any] | None = None
    per_identity: Mapping[str, Sequence[Any]] | None = None
    title: str = "siamid evaluation report"

    def __post_init__(self) -> None:
        self.genuine = _array("genuine", self.genuine)
        self.impostor = _array("impostor", self.impostor)
        self.mated_dist = _array("mated_dist", self.mated_dist)
        self.mated_rank = _array("mated_rank", self.mated_rank)
        self.nonmated_best = _array("nonmated_best", self.nonmated_best)
        if self.mated_dist.size == 0:
            raise ValueError("ReportData needs at least one mated search (mated_dist is empty)")
        if self.mated_dist.shape != self.mated_rank.shape:
            raise ValueError(
                "mated_dist and mated_rank must have one entry per mated search, "
                f"got {self.mated_dist.size} and {self.mated_rank.size}"
            )
        if (self.genuine.size == 0) != (self.impostor.size == 0):
            raise ValueError("give both genuine and impostor distances, or neither")
        if self.max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {self.max_rank}")
        if self.cmc is not None:
            self.cmc = _array("cmc", self.cmc)
        if self.threshold is None and self.nonmated_best.size:
            self.target_fpir = (
                DEFAULT_TARGET_FPIR if self.target_fpir is None else float(self.target_fpir)
            )
            # the same rule (and fallback) as calibrate and identify
            self.threshold = operating_threshold(self.target_fpir, self.nonmated_best)

    @property
    def has_verification(self) -> bool:
        return self.genuine.size > 0

    @property
    def has_nonmated(self) -> bool:
        return self.nonmated_best.size > 0

    def cmc_curve(self) -> np.ndarray:
        if self.cmc is not None:
            return self.cmc
        return openset.cmc(self.mated_rank, self.max_rank)


def summary_figures(
    data: ReportData,
    fpir_targets: Sequence[float] = FPIR_TARGETS,
    far_targets: Sequence[float] = FAR_TARGETS,
) -> dict[str, float]:
    """The headline figures of ``data`` keyed as in the report table.

    Keys: ``rank1``, ``rank5``, ``dir@fpir=<t>%`` (threshold calibrated per target with
    :func:`siamese.openset.threshold_at_fpir`), ``eer``, ``eer_threshold``,
    ``tar@far=<t>%``, ``threshold``, ``target_fpir``, ``fpir``, ``fnir``, ``dir`` (at
    ``data.threshold``, rank 1), ``n_*`` counts.  Figures whose inputs are missing
    (no non-mated searches, no verification pairs) are left out.  Use it per fold to
    build ``ReportData.folds``.
    """
    out: dict[str, float] = {
        "rank1": openset.rank1(data.mated_rank),
        "rank5": float(openset.cmc(data.mated_rank, 5)[4]),
        "n_mated": float(data.mated_dist.size),
        "n_nonmated": float(data.nonmated_best.size),
        "n_genuine": float(data.genuine.size),
        "n_impostor": float(data.impostor.size),
    }
    if data.has_nonmated:
        dirs = openset.dir_at_fpir(
            fpir_targets, data.mated_dist, data.mated_rank, data.nonmated_best
        )
        out.update({dir_key(t): v for t, v in dirs.items()})
    if data.has_verification:
        rate, thr = eer(data.genuine, data.impostor)
        out["eer"], out["eer_threshold"] = rate, thr
        for t in far_targets:
            out[tar_key(t)] = openset.tar_at_far(data.genuine, data.impostor, t)
    if data.threshold is not None:
        thr = float(data.threshold)
        out["threshold"] = thr
        if data.target_fpir is not None:
            out["target_fpir"] = float(data.target_fpir)
        if data.has_nonmated:
            out["fpir"] = openset.fpir_at(thr, data.nonmated_best)
        out["fnir"] = openset.fnir_at(thr, data.mated_dist, data.mated_rank)
        out["dir"] = 1.0 - out["fnir"]
    return out


# ---------------------------------------------------------------------------- plots
