"""``siamid evaluate`` and ``siamid demo``: the open-set protocol, and the whole chain at once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.options import (
    BackboneChoice,
    BackboneOpt,
    CalibrateOnChoice,
    CalibrateOnOpt,
    DetectorOpt,
    EpochsOpt,
    FacesModeOpt,
    FlipOpt,
    JsonOpt,
    LabelledMultipleOpt,
    MembersOpt,
    TargetFpirOpt,
    TemplateOpt,
    TuneOpt,
    chosen,
    data_folder,
)
from pipelines.cli.output import CliError, emit_json, quiet_flow_failures, runtime
from siamese.openset import DEFAULT_TARGET_FPIR, rate_label

app = typer.Typer()


@app.command("evaluate")
def evaluate_cmd(
    data: Annotated[Path, typer.Option(help="ImageFolder PATH/<person>/<image> to evaluate on.")],
    report: Annotated[Path, typer.Option(help="Folder for metrics.json, probes.*, report.html.")],
    folds: Annotated[int, typer.Option(min=1, help="Repetitions with re-drawn splits.")] = 3,
    train_fraction: Annotated[float, typer.Option(help="Share of people that train.")] = 0.5,
    known_fraction: Annotated[
        float, typer.Option(help="Share of the other people enrolled; the rest are unknown.")
    ] = 0.5,
    enroll: Annotated[int, typer.Option(min=1, help="Images enrolled per known person.")] = 5,
    target_fpir: TargetFpirOpt = DEFAULT_TARGET_FPIR,
    seed: Annotated[int, typer.Option(help="Seeds the splits and training.")] = 0,
    model: Annotated[
        str | None,
        typer.Option(help="Evaluate this model version instead of training one per fold."),
    ] = None,
    epochs: EpochsOpt = None,
    backbone: BackboneOpt = BackboneChoice["small-cnn"],
    members: MembersOpt = None,
    template: TemplateOpt = None,
    calibrate_on: CalibrateOnOpt = CalibrateOnChoice["unknown+train"],
    faces: FacesModeOpt = None,
    tune: TuneOpt = None,
    flip_average: FlipOpt = None,
    multiple_faces: LabelledMultipleOpt = None,
    detector: DetectorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Identity-disjoint open-set evaluation: DIR/FPIR, FNIR, rank-1/CMC, DET; HTML report."""
    from pipelines.flows.evaluate import evaluate_flow
    from pipelines.services.eval_outputs import headline_dir
    from pipelines.services.evaluation import Protocol
    from pipelines.services.training import TrainOptions

    quiet_flow_failures()

    data_folder(data)
    protocol = Protocol(
        data=str(data.resolve()),
        folds=folds,
        train_fraction=train_fraction,
        known_fraction=known_fraction,
        enroll=enroll,
        target_fpir=target_fpir,
        seed=seed,
        model=model,
        epochs=epochs,
        members=members,
        template=chosen(template),
        calibrate_on=calibrate_on.value,
        faces=chosen(faces),
        backbone=backbone.value,
        tune=chosen(tune),
        flip_average=flip_average,
        multiple_faces=chosen(multiple_faces),
    )
    if model is None:
        from pipelines.services.eval_steps import fold_options

        try:  # refuse bad training choices before Prefect starts
            fold_options(protocol, 0, TrainOptions(backbone=protocol.backbone).crop()).configs()
        except ValueError as exc:
            raise CliError(str(exc)) from None
    rt = runtime()
    if model is not None:
        from pipelines.services.models import resolve_model

        resolved = resolve_model(rt.sessions, model)  # an unknown or unusable model fails here
        resolved.crop.check(protocol.faces, resolved.name)
    out = evaluate_flow(protocol, str(report))
    m = out["metrics"]
    typer.echo(
        f"rank-1 {m['rank1']:.3f}  DIR@FPIR={rate_label(DEFAULT_TARGET_FPIR)} "
        f"{headline_dir(m):.3f}  "
        f"EER {100 * m['eer']:.2f}%  threshold {m['threshold']:.4f}  realised FPIR "
        f"{m['realised_fpir']:.3f} (target {m['target_fpir']:g})  FNIR {m['realised_fnir']:.3f}"
    )
    typer.echo(f"report: {out['report']}")
    if as_json:
        emit_json(
            {
                "evaluation_run": out["evaluation_run"],
                "report": out["report"],
                **{k: v for k, v in m.items() if k not in ("folds", "protocol")},
            }
        )


# ---------------------------------------------------------------- demo


@app.command("demo")
def demo_cmd(
    data: Annotated[
        Path | None,
        typer.Option(help="An ImageFolder of real faces; default: a seeded synthetic set."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds data, splits and training.")] = 0,
    epochs: EpochsOpt = None,
    backbone: BackboneOpt = BackboneChoice["small-cnn"],
    folds: Annotated[int, typer.Option(min=1, help="Evaluation folds.")] = 1,
    members: MembersOpt = 1,
    faces: FacesModeOpt = None,
    tune: TuneOpt = None,
    flip_average: FlipOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the whole chain: data, import, train, embed, calibrate, identify, evaluate."""
    from pipelines.demo import run_demo, summary_table

    quiet_flow_failures()

    if data is not None:
        data_folder(data)
    result = run_demo(
        runtime(),
        data.resolve() if data else None,
        seed=seed,
        epochs=epochs,
        folds=folds,
        members=members,
        faces=chosen(faces),
        backbone=backbone.value,
        tune=chosen(tune),
        flip_average=flip_average,
    )
    typer.echo(summary_table(result))
    if as_json:
        emit_json(result.as_dict())
