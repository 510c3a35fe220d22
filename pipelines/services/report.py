"""Self-contained HTML evaluation report: plots, figures table, per-identity errors.

:func:`write_report` renders, with matplotlib's Agg canvas (no pyplot, no global backend
state, so it is safe inside worker threads), a DET curve, DIR against FPIR, the CMC, and
distance histograms with the operating threshold, plus a table of the headline figures
(with mean ± std over folds when given) and the identities with the most errors.  The
PNGs are written beside ``report.html`` and also embedded in it as base64 data URIs, so
the HTML file alone can be mailed or attached to a CI run.

The page is rendered from the Jinja2 template ``templates/report.html.j2``; this module
computes what goes in it. A plain function: flows call it from a task; no Prefect here.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from matplotlib.figure import Figure

from pipelines.services.scoring import operating_threshold
from siamese import openset
from siamese.metrics import eer
from siamese.openset import DEFAULT_FAR_TARGETS as FAR_TARGETS
from siamese.openset import DEFAULT_FPIR_TARGETS as FPIR_TARGETS
from siamese.openset import DEFAULT_TARGET_FPIR, dir_key, rate_label, tar_key

logger = logging.getLogger(__name__)

__all__ = [
    "ReportData",
    "figure_label",
    "summary_figures",
    "write_report",
]

# Deterministic PNG bytes: matplotlib otherwise stamps its version into the file.
_PNG_METADATA = {"Software": None}


# Keys of the figures table, in display order, with labels and whether they are rates.
_FIXED_FIGURES: dict[str, tuple[str, bool]] = {
    "rank1": ("Rank-1 identification rate (closed set)", True),
    "rank5": ("Rank-5 identification rate (closed set)", True),
    "eer": ("Verification EER", True),
    "eer_threshold": ("Distance threshold at EER", False),
    "threshold": ("Operating threshold (open set, accept distance <=)", False),
    "target_fpir": ("Target FPIR of the operating threshold", True),
    "fpir": ("Realised FPIR at the operating threshold", True),
    "fnir": ("Realised FNIR (rank 1) at the operating threshold", True),
    "dir": ("DIR (rank 1) at the operating threshold", True),
    "n_mated": ("Mated searches", False),
    "n_nonmated": ("Non-mated searches", False),
    "n_genuine": ("Genuine pairs", False),
    "n_impostor": ("Impostor pairs", False),
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


def _figure_order() -> list[str]:
    keys = ["rank1", "rank5"]
    keys += [dir_key(t) for t in FPIR_TARGETS]
    keys += ["eer", "eer_threshold"]
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


def _new_figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.0, 4.2), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=_PNG_METADATA)
    return buf.getvalue()


def _plot_det(data: ReportData) -> bytes:
    det = openset.det_curve(data.genuine, data.impostor)
    # Log axes cannot show 0: clip to half the smallest representable rate, so perfect
    # operating points sit visibly on the axis floor instead of vanishing.
    floor = 0.5 / max(data.genuine.size, data.impostor.size)
    fig, ax = _new_figure()
    ax.step(np.clip(det.far, floor, 1.0), np.clip(det.frr, floor, 1.0), where="post", label="DET")
    rate, _ = eer(data.genuine, data.impostor)
    r = max(rate, floor)
    ax.plot([floor, 1.0], [floor, 1.0], color="0.7", lw=0.8, ls=":", label="FMR = FNMR")
    ax.plot([r], [r], "o", color="C3", label=f"EER {rate:.2%}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.0)
    ax.set_xlabel("FMR (false match rate, impostor pairs accepted)")
    ax.set_ylabel("FNMR (false non-match rate)")
    ax.set_title("DET curve (verification)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    return _png(fig)


def _plot_dir_fpir(data: ReportData) -> bytes:
    curve = openset.dir_fpir_curve(data.mated_dist, data.mated_rank, data.nonmated_best)
    floor = 0.5 / data.nonmated_best.size
    fig, ax = _new_figure()
    ax.step(np.clip(curve.fpir, floor, 1.0), curve.dir, where="post", label="rank 1")
    points = openset.operating_points(
        FPIR_TARGETS, data.mated_dist, data.mated_rank, data.nonmated_best
    )
    for p in points:
        ax.plot(
            [max(p.fpir, floor)],
            [p.dir],
            "o",
            label=f"target FPIR {rate_label(p.target_fpir)}: DIR {p.dir:.1%}",
        )
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("FPIR (non-mated searches returning a candidate)")
    ax.set_ylabel("DIR (mate returned at rank 1 within threshold)")
    ax.set_title("DIR against FPIR (open-set identification)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def _plot_cmc(data: ReportData) -> bytes:
    values = data.cmc_curve()
    ranks = np.arange(1, values.size + 1)
    fig, ax = _new_figure()
    ax.plot(ranks, values, "o-")
    for r, v in zip(ranks[:3], values[:3], strict=False):
        ax.annotate(f"{v:.1%}", (r, v), textcoords="offset points", xytext=(4, -12))
    ax.set_xticks(ranks if ranks.size <= 20 else np.linspace(1, ranks.size, 10, dtype=int))
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (rank <= r)")
    ax.set_title("CMC (closed-set identification)")
    ax.grid(True, alpha=0.3)
    return _png(fig)


def _histogram(
    title: str,
    first: tuple[str, np.ndarray],
    second: tuple[str, np.ndarray],
    lines: list[tuple[str, float, str]],
) -> bytes:
    a = first[1][np.isfinite(first[1])]
    b = second[1][np.isfinite(second[1])]
    both = np.concatenate([a, b])
    # Searches without a candidate (inf) cannot be drawn; the legend says how many.
    first = (_count_label(first[0], first[1]), first[1])
    second = (_count_label(second[0], second[1]), second[1])
    fig, ax = _new_figure()
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        for (label, values), color in ((first, "C0"), (second, "C3")):
            finite = values[np.isfinite(values)]
            if finite.size:
                ax.hist(finite, bins=bins, density=True, alpha=0.5, color=color, label=label)
    for label, x, style in lines:
        if math.isfinite(x):
            ax.axvline(x, color="k", ls=style, lw=1.2, label=f"{label} = {x:.4g}")
    ax.set_xlabel("distance (lower = more similar)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return _png(fig)


def _count_label(label: str, values: np.ndarray) -> str:
    absent = int(np.count_nonzero(~np.isfinite(values)))
    extra = f", {absent} without candidate" if absent else ""
    return f"{label} ({values.size}{extra})"


def _plot_pair_hist(data: ReportData) -> bytes:
    _, eer_thr = eer(data.genuine, data.impostor)
    lines = [("EER threshold", eer_thr, "--")]
    if data.threshold is not None:
        lines.append(("operating threshold", float(data.threshold), "-"))
    return _histogram(
        "Genuine and impostor pair distances",
        ("genuine", data.genuine),
        ("impostor", data.impostor),
        lines,
    )


def _plot_search_hist(data: ReportData) -> bytes:
    lines = []
    if data.threshold is not None:
        lines.append(("operating threshold", float(data.threshold), "-"))
    return _histogram(
        "Best-candidate distances of 1:N searches",
        ("mated: mate's distance", data.mated_dist),
        ("non-mated: best distance", data.nonmated_best),
        lines,
    )


# ----------------------------------------------------------------------------- HTML

#: The page template, shipped as package data beside this module.
TEMPLATE = "report.html.j2"

_PLOTS = [
    ("det", "DET curve", "Verification: FNMR against FMR over all thresholds (log axes)."),
    (
        "dir_fpir",
        "DIR vs FPIR",
        "Open set, rank 1: DIR against FPIR; dots are the thresholds calibrated for "
        "FPIR 0.1%, 1%, 10%.",
    ),
    ("cmc", "CMC", "Closed set: fraction of mated searches with the mate at rank <= r."),
    (
        "pair_distances",
        "Genuine / impostor distances",
        "Verification pair distances with the EER and operating thresholds.",
    ),
    (
        "search_distances",
        "Mated / non-mated search distances",
        "Best-candidate distances of 1:N searches with the operating threshold.",
    ),
]


def _fmt(value: Any, rate: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if rate:
        return f"{v * 100:.2f}%"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v)}"
    return f"{v:.4g}"


@dataclass(frozen=True)
class _Cell:
    text: str
    numeric: bool


def _cell(value: Any, rate: bool) -> _Cell:
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )
    return _Cell(_fmt(value, rate), numeric)


def _fold_spread(folds: Sequence[Mapping[str, float]], key: str, rate: bool) -> str:
    values = [float(f[key]) for f in folds if key in f and f[key] is not None]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    mean = float(np.mean(values))
    # Sample standard deviation: folds are a sample of possible splits.
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{_fmt(mean, rate)} ± {_fmt(std, rate)} (n={len(values)})"


def _under_resolved(key: str, figures: Mapping[str, Any]) -> bool:
    """True when a rate target is finer than 1 / (number of trials) of its population.

    E.g. DIR at FPIR 0.1 % from 400 non-mated searches is really DIR at FPIR 0: the
    calibration cannot allow a fraction of a false positive.
    """
    if key.startswith("dir@fpir="):
        count_key = "n_nonmated"
    elif key.startswith("tar@far="):
        count_key = "n_impostor"
    else:
        return False
    try:
        target = float(key.split("=", 1)[1].rstrip("%")) / 100.0
        n = float(figures[count_key])
    except (KeyError, TypeError, ValueError):
        return False
    return n * target < 1.0


_UNDER_RESOLVED_NOTE = (
    "† fewer trials than 1 / target: the threshold admits no false positive at all, so "
    "the figure is really at FPIR / FAR 0 (evaluate more non-mated searches or impostor pairs)."
)


def _figure_rows(
    figures: Mapping[str, Any], folds: Sequence[Mapping[str, float]]
) -> tuple[list[dict[str, str]], bool]:
    """Rows of the figures table (label, key, value, fold spread) and whether any is flagged."""
    keys = [k for k in _figure_order() if k in figures]
    keys += [k for k in figures if k not in keys and k.startswith(("dir@fpir=", "tar@far="))]
    fold_keys = {k for f in folds for k in f}
    rows, flagged = [], False
    for key in keys:
        label, rate = figure_label(key)
        if _under_resolved(key, figures):
            label += " †"
            flagged = True
        spread = _fold_spread(folds, key, rate) if key in fold_keys else ""
        rows.append(
            {"label": label, "key": key, "value": _fmt(figures[key], rate), "spread": spread}
        )
    return rows, flagged


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _identity_table(
    columns: Mapping[str, Sequence[Any]], top_n: int, threshold: Any
) -> dict[str, Any]:
    names = list(columns)
    n_rows = len(columns[names[0]]) if names else 0
    shown = min(n_rows, top_n)
    rate_cols = {"miss_rate"}
    rows = [[_cell(columns[n][i], n in rate_cols) for n in names] for i in range(shown)]
    caption = (
        f"Top {shown} of {n_rows} identities by misses + false accepts at threshold "
        f"{_fmt(threshold, False)} (rank 1)."
    )
    return {"columns": names, "rows": rows, "caption": caption}


def _per_identity(data: ReportData) -> Mapping[str, Sequence[Any]] | None:
    if data.per_identity is not None:
        return data.per_identity
    if data.mated_ids is None or data.threshold is None:
        return None
    with_nonmated = data.nonmated_best_ids is not None and data.has_nonmated
    return openset.per_identity_errors(
        float(data.threshold),
        data.mated_ids,
        data.mated_dist,
        data.mated_rank,
        data.nonmated_best if with_nonmated else None,
        data.nonmated_best_ids if with_nonmated else None,
    )


def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines.services", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE)


def write_report(
    report_dir: Path,
    metrics: Mapping[str, Any],
    curves: ReportData,
    *,
    top_n: int = 20,
    embed: bool = True,
) -> Path:
    """Write ``report_dir/report.html`` (plus one PNG per plot) and return its path.

    ``metrics``: figures computed by the caller.  Keys known to the figures table (see
    :func:`summary_figures`) override the values computed from ``curves``; every other
    entry (model, data set, epochs, nested dicts flattened with dots) goes to a
    "Run details" table.  ``top_n``: rows of the per-identity error table.  ``embed``:
    inline the PNGs as base64 data URIs (self-contained HTML); otherwise link the PNG
    files beside the report.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)

    figures: dict[str, Any] = summary_figures(curves)
    known = set(_figure_order())
    details: dict[str, Any] = {}
    for key, value in metrics.items():
        if key in known or key.startswith(("dir@fpir=", "tar@far=")):
            figures[key] = value
        else:
            details[key] = value

    renderers = {
        "det": _plot_det if curves.has_verification else None,
        "dir_fpir": _plot_dir_fpir if curves.has_nonmated else None,
        "cmc": _plot_cmc,
        "pair_distances": _plot_pair_hist if curves.has_verification else None,
        "search_distances": _plot_search_hist,
    }
    plots = []
    for name, heading, caption in _PLOTS:
        render = renderers[name]
        src = None
        if render is not None:
            png = render(curves)
            path = report_dir / f"{name}.png"
            path.write_bytes(png)
            src = (
                "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                if embed
                else path.name
            )
        plots.append({"name": name, "heading": heading, "caption": caption, "src": src})

    rows, flagged = _figure_rows(figures, curves.folds)
    identities = _per_identity(curves)
    doc = _template().render(
        title=curves.title,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        figures=rows,
        n_folds=len(curves.folds),
        under_resolved_note=_UNDER_RESOLVED_NOTE if flagged else "",
        details=[(k, _cell(v, False)) for k, v in _flatten(details).items()],
        plots=plots,
        identities=(
            _identity_table(identities, top_n, curves.threshold) if identities is not None else None
        ),
    )
    out = report_dir / "report.html"
    out.write_text(doc, encoding="utf-8")
    logger.info("wrote evaluation report %s", out)
    return out
