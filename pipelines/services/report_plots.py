"""The report's plots as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot, no global
backend state, so it is safe inside worker threads): DET, DIR against FPIR, CMC and distance
histograms with the operating threshold."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pipelines.services.report_data import ReportData
from siamese import openset
from siamese.metrics import eer
from siamese.openset import DEFAULT_FPIR_TARGETS as FPIR_TARGETS
from siamese.openset import rate_label

# Deterministic PNG bytes: matplotlib otherwise stamps its version into the file.
_PNG_METADATA = {"Software": None}


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


def _operating_line(data: ReportData) -> list[tuple[str, float, str]]:
    """The operating threshold as a histogram's vertical line (none without a threshold)."""
    return [] if data.threshold is None else [("operating threshold", float(data.threshold), "-")]


def _plot_pair_hist(data: ReportData) -> bytes:
    _, eer_thr = eer(data.genuine, data.impostor)
    return _histogram(
        "Genuine and impostor pair distances",
        ("genuine", data.genuine),
        ("impostor", data.impostor),
        [("EER threshold", eer_thr, "--"), *_operating_line(data)],
    )


def _plot_search_hist(data: ReportData) -> bytes:
    return _histogram(
        "Best-candidate distances of 1:N searches",
        ("mated: mate's distance", data.mated_dist),
        ("non-mated: best distance", data.nonmated_best),
        _operating_line(data),
    )


# ----------------------------------------------------------------------------- HTML

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


def render_plots(curves: ReportData, report_dir: Path, *, embed: bool) -> list[dict[str, Any]]:
    """Write one PNG per plot that ``curves`` can draw into ``report_dir``; for the template,
    each plot's name, heading, caption and source (a data URI with ``embed``, else the file)."""
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
    return plots
