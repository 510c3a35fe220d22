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

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from pipelines.services.report_data import ReportData, figure_label, figure_order, summary_figures
from pipelines.services.report_plots import render_plots
from siamese import openset

logger = logging.getLogger(__name__)

__all__ = [
    "ReportData",
    "figure_label",
    "summary_figures",
    "write_report",
]

#: The page template, shipped as package data beside this module.
TEMPLATE = "report.html.j2"


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
    keys = [k for k in figure_order() if k in figures]
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
    known = set(figure_order())
    details: dict[str, Any] = {}
    for key, value in metrics.items():
        if key in known or key.startswith(("dir@fpir=", "tar@far=")):
            figures[key] = value
        else:
            details[key] = value

    plots = render_plots(curves, report_dir, embed=embed)

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
