"""``siamid demo``: the whole chain on the embedded default, end to end, as a user would run it.

synthetic gallery (or a given folder) -> import -> train -> embed -> calibrate -> identify ->
evaluate -> report. An entry point like the command line: it runs the ``train``, ``embed`` and
``evaluate`` flows one after the other and calls the services for the rest.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.flows.embed import EmbedSummary, embed_flow
from pipelines.flows.evaluate import evaluate_flow
from pipelines.flows.train import train_flow
from pipelines.services.calibration import Calibration, calibrate
from pipelines.services.demo import (
    IdentifySummary,
    folder_plan,
    identify_summary,
    probe_sample,
    synthetic_plan,
)
from pipelines.services.eval_outputs import headline_dir
from pipelines.services.evaluation import Protocol
from pipelines.services.gallery import ImportItem, ImportSummary, import_items
from pipelines.services.runtime import Runtime
from pipelines.services.training import TrainedModel, TrainOptions
from siamese.openset import DEFAULT_TARGET_FPIR, rate_label

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    source: str
    imported: ImportSummary
    trained: TrainedModel
    embedded: EmbedSummary
    calibrated: Calibration
    identified: IdentifySummary
    evaluated: dict[str, Any]

    @property
    def report(self) -> str:
        return str(self.evaluated["report"])

    def as_dict(self) -> dict[str, Any]:
        m = self.evaluated["metrics"]
        return {
            "source": self.source,
            "import": self.imported.as_dict(),
            "train": {
                "model_version": self.trained.name,
                "validation": self.trained.validation.as_dict(),
            },
            "embed": self.embedded.model_dump(),
            "calibrate": self.calibrated.as_dict(),
            "identify": asdict(self.identified),
            "evaluate": {
                "report": self.report,
                **{
                    k: m[k]
                    for k in (
                        "rank1",
                        "dir_at_fpir",
                        "eer",
                        "threshold",
                        "realised_fpir",
                        "realised_fnir",
                    )
                },
            },
        }


def run_demo(
    rt: Runtime,
    data: Path | None = None,
    *,
    seed: int = 0,
    epochs: int | None = None,
    folds: int = 1,
    members: int | None = None,
    faces: str | None = None,
    backbone: str = "small-cnn",
    tune: str | None = None,
    flip_average: bool | None = None,
) -> DemoResult:
    """Run every step on the embedded default; each step logs one line as it ends."""
    root = rt.settings.home_dir / "demo"
    plan = folder_plan(data, root, seed) if data else synthetic_plan(root, seed)
    people = len({n for _, n in plan.gallery})
    logger.info(
        "[1/6] data: %s, %d gallery images of %d people", plan.source, len(plan.gallery), people
    )

    imported = import_items(
        [ImportItem(p, n) for p, n in plan.gallery], sessions=rt.sessions, limits=rt.limits
    )
    logger.info("[2/6] import: %d new, %d rejected", imported.new, imported.rejected)

    # The training choices, the same for the demo's model and the evaluation's fold encoders.
    choices: dict[str, Any] = {
        "seed": seed,
        "epochs": epochs,
        "members": members,
        "faces": faces,
        "backbone": backbone,
        "tune": tune,
        "flip_average": flip_average,
    }
    trained = train_flow(options=TrainOptions(**choices))
    eer = trained.validation.eer
    logger.info(
        "[3/6] train: model %s, validation EER %s",
        trained.name,
        "n/a" if eer is None else f"{100 * eer:.2f}%",
    )

    embedded = embed_flow(model=trained.name)
    logger.info(
        "[4/6] embed: %d images, index version %d (%s)",
        embedded.embedded,
        embedded.index_version,
        embedded.factory,
    )

    calibrated = calibrate(rt, plan.visitors_calibration, DEFAULT_TARGET_FPIR)
    identified = identify_summary(rt, probe_sample(plan, seed), {n for _, n in plan.gallery})
    logger.info(
        "[5/6] calibrate + identify: threshold %.4f; %d/%d enrolled visitors recognised, "
        "%d/%d unknown visitors rejected",
        calibrated.threshold,
        identified.enrolled_correct,
        identified.enrolled,
        identified.unknown_rejected,
        identified.unknown,
    )

    protocol = Protocol(
        data=str(plan.evaluation), folds=folds, enroll=4 if not data else 5, **choices
    )
    evaluated = evaluate_flow(protocol, str(rt.settings.reports_dir / "demo"))
    logger.info("[6/6] evaluate: report %s", evaluated["report"])
    return DemoResult(plan.source, imported, trained, embedded, calibrated, identified, evaluated)


def summary_table(result: DemoResult) -> str:
    """The few figures a newcomer wants to see at the end, as a plain-text table."""
    i, c, m = result.identified, result.calibrated, result.evaluated["metrics"]
    eer = result.trained.validation.eer
    rows = [
        ("data", result.source),
        ("gallery", f"{result.embedded.vectors} images indexed ({result.embedded.factory})"),
        ("model", result.trained.name),
        ("validation EER", "n/a" if eer is None else f"{100 * eer:.2f}%"),
        (
            "threshold",
            f"{c.threshold:.4f} at target FPIR {c.target_fpir:g} "
            f"(realised {100 * c.realised_fpir:.1f}% on {c.nonmated_searches} searches)",
        ),
        (
            "enrolled visitors",
            f"{i.enrolled_correct}/{i.enrolled} recognised, {i.enrolled_wrong_person} taken "
            f"for someone else, {i.enrolled_rejected} rejected "
            f"(nearest is right for {i.enrolled_nearest_is_right})",
        ),
        (
            "unknown visitors",
            f"{i.unknown_rejected}/{i.unknown} rejected, {i.unknown_accepted} accepted",
        ),
        (
            "evaluation",
            f"rank-1 {m['rank1']:.3f}, DIR@FPIR={rate_label(DEFAULT_TARGET_FPIR)} "
            f"{headline_dir(m):.3f}, "
            f"EER {100 * m['eer']:.2f}%, realised FPIR {100 * m['realised_fpir']:.1f}%",
        ),
        ("report", result.report),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {val}" for k, val in rows)
