"""An evaluation's outputs: metrics.json (means over folds), per-probe results, report.html,
the ``evaluation_run`` row, and the lines the command line prints."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.services.evaluation import (
    FoldScores,
    Protocol,
)
from pipelines.services.runtime import Runtime
from siamese.openset import (
    DEFAULT_FAR_TARGETS,
    DEFAULT_FPIR_TARGETS,
    DEFAULT_TARGET_FPIR,
    dir_key,
    tar_key,
)

logger = logging.getLogger(__name__)


#: How a photo with several usable faces is scored (metrics.json, the report, the README).
SEVERAL_FACES_RULE = (
    "every usable face of a probe is a search, as `siamid identify` answers it: a mated probe is "
    "found when one of its faces is accepted as its person; a non-mated probe is a false "
    "positive when any of its faces is accepted; an enrolled photo contributes the person's "
    "face (--multiple-faces)"
)


def summarise(folds: list[FoldScores], protocol: Protocol) -> dict[str, Any]:
    """metrics.json: means over folds (with std and per-fold values) in the documented keys."""

    def stat(key: str) -> tuple[float, float]:
        vals = [f.figures[key] for f in folds if key in f.figures]
        if not vals:
            return float("nan"), float("nan")
        return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0

    metrics: dict[str, Any] = {
        "rank1": stat("rank1")[0],
        "rank5": stat("rank5")[0],
        "dir_at_fpir": {str(t): stat(dir_key(t))[0] for t in DEFAULT_FPIR_TARGETS},
        "eer": stat("eer")[0],
        "pair_eer": stat("pair_eer")[0],
        "tar_at_far": {str(t): stat(tar_key(t))[0] for t in DEFAULT_FAR_TARGETS},
        "threshold": stat("threshold")[0],
        "target_fpir": protocol.target_fpir,
        "realised_fpir": stat("fpir")[0],
        "realised_fnir": stat("fnir")[0],
        "std": {
            "rank1": stat("rank1")[1],
            "eer": stat("eer")[1],
            "pair_eer": stat("pair_eer")[1],
            "dir_at_fpir": {str(t): stat(dir_key(t))[1] for t in DEFAULT_FPIR_TARGETS},
            "realised_fpir": stat("fpir")[1],
            "realised_fnir": stat("fnir")[1],
        },
        "cmc": np.mean([_cmc(f, 10) for f in folds], axis=0).tolist(),
        # per fold, means over folds
        "several_faces": {
            "probes": stat("probes_several_faces")[0],
            "enrolled": stat("enrolled_several_faces")[0],
            "enrolled_not_largest": stat("enrolled_not_largest")[0],
            "scored_as": SEVERAL_FACES_RULE,
        },
        "folds": [
            {
                "fold": f.fold,
                "model_version": f.model_version,
                **f.figures,
                "people": {k: len(v) for k, v in asdict(f.split).items()},
            }
            for f in folds
        ],
        "protocol": asdict(protocol),
    }
    return metrics


def _cmc(f: FoldScores, max_rank: int) -> np.ndarray:
    from siamese.openset import cmc

    return cmc(f.mated_rank, max_rank)


def write_outputs(folds: list[FoldScores], metrics: dict[str, Any], report_dir: Path) -> Path:
    """metrics.json, per-probe results (Parquet and CSV) and report.html."""
    import pandas as pd

    from pipelines.services.report import ReportData, write_report
    from siamese.openset import per_identity_errors

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    probes = pd.DataFrame([row for f in folds for row in f.test_probe_rows])
    probes.to_parquet(report_dir / "probes.parquet", index=False)
    probes.to_csv(report_dir / "probes.csv", index=False)

    # Each fold has its own encoder, so distances of different folds are on different scales:
    # the plots show the first fold alone, and the table gives every figure as a fold mean.
    first = folds[0]
    data = ReportData(
        genuine=first.genuine,
        impostor=first.impostor,
        mated_dist=first.mated_dist,
        mated_rank=first.mated_rank,
        nonmated_best=first.test_nonmated,
        threshold=first.threshold,
        target_fpir=metrics["target_fpir"],
        folds=[f.figures for f in folds],
        per_identity=per_identity_errors(
            first.threshold,
            first.mated_ids,
            first.mated_dist,
            first.mated_rank,
            first.test_nonmated,
            first.test_nonmated_ids,
        ),
        title=f"siamid open-set evaluation: {Path(metrics['protocol']['data']).name}, "
        f"{len(folds)} fold(s)",
    )
    keys = set.intersection(*(set(f.figures) for f in folds))
    table: dict[str, Any] = {k: float(np.mean([f.figures[k] for f in folds])) for k in keys}
    table["protocol"] = metrics["protocol"]
    table["note"] = (
        "figures: means over folds (the last column adds the std); plots and the per-identity "
        "table: fold 1 only, since every fold trains its own encoder and distance scales differ"
    )
    return write_report(report_dir, table, data)


def record_run(rt: Runtime, metrics: dict[str, Any], report: str, model_ref: str | None) -> int:
    """An ``evaluation_run`` row with the metrics and the report's path."""
    from storage.evaluations import add_evaluation_run
    from storage.registry import get_model_version

    with rt.sessions.begin() as s:
        mv = get_model_version(session=s, ref=model_ref) if model_ref else None
        row = add_evaluation_run(
            session=s,
            model_version_id=mv.id if mv else None,
            index_version_id=None,
            protocol=metrics["protocol"],
            metrics={k: v for k, v in metrics.items() if k != "protocol"},
            report_path=report,
        )
        return row.id


def headline_dir(metrics: dict[str, Any]) -> float:
    """DIR at the default target FPIR from metrics.json (what the command line and demo print)."""
    return float(metrics["dir_at_fpir"][str(DEFAULT_TARGET_FPIR)])


def fold_line(f: FoldScores, folds: int) -> str:
    """One line of progress per fold."""
    return (
        f"fold {f.fold + 1}/{folds}: rank-1 {f.figures['rank1']:.3f}, "
        f"DIR@FPIR=1% {f.figures.get(dir_key(DEFAULT_TARGET_FPIR), float('nan')):.3f}, "
        f"EER {100 * f.figures.get('eer', float('nan')):.2f}%, threshold "
        f"{f.threshold:.4f}, realised FPIR {f.figures.get('fpir', float('nan')):.3f}"
    )
