"""``siamid train`` and ``siamid models``: train an encoder, list the registered versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.options import (
    ArchChoice,
    BackboneChoice,
    BackboneOpt,
    DistanceChoice,
    EpochsOpt,
    FacesModeOpt,
    FlipOpt,
    JsonOpt,
    LabelledMultipleOpt,
    LossChoice,
    MembersOpt,
    TemplateOpt,
    TuneOpt,
    chosen,
    data_folder,
)
from pipelines.cli.output import CliError, emit_json, quiet_flow_failures, runtime

app = typer.Typer()


@app.command("train")
def train_cmd(
    data: Annotated[
        Path | None,
        typer.Option(
            help="ImageFolder to import and train on; default: the gallery in the database."
        ),
    ] = None,
    arch: Annotated[ArchChoice, typer.Option(help="Pair network.")] = ArchChoice["siamese"],
    loss: Annotated[
        LossChoice | None,
        typer.Option(help="hadsell (2006 eq. 4) or chopra (2005 eq. 8); bce for two-channel."),
    ] = None,
    distance: Annotated[DistanceChoice, typer.Option(help="Embedding distance.")] = DistanceChoice[
        "l2"
    ],
    margin: Annotated[
        float | None,
        typer.Option(
            help="Contrastive margin m (or Chopra's Q); default from the training config."
        ),
    ] = None,
    epochs: EpochsOpt = None,
    seed: Annotated[int, typer.Option(help="Seeds split, weights, sampling, augmentation.")] = 0,
    backbone: BackboneOpt = BackboneChoice["small-cnn"],
    members: MembersOpt = None,
    faces: FacesModeOpt = None,
    tune: TuneOpt = None,
    flip_average: FlipOpt = None,
    template: TemplateOpt = None,
    multiple_faces: LabelledMultipleOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a Siamese encoder with the contrastive loss and register a model version."""
    from pipelines.flows.train import train_flow
    from pipelines.services.training import TrainOptions

    quiet_flow_failures()

    options = TrainOptions(
        arch=arch.value,
        loss=chosen(loss),
        distance=distance.value,
        margin=margin,
        epochs=epochs,
        seed=seed,
        backbone=backbone.value,
        members=members,
        faces=chosen(faces),
        tune=chosen(tune),
        flip_average=flip_average,
        template=chosen(template),
        multiple_faces=chosen(multiple_faces),
    )
    try:
        options.configs()  # refuse bad combinations before Prefect starts
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if data is not None:
        data_folder(data, "identity")
    from pipelines.services.training import trainable_set

    # the data is imported and checked before Prefect starts (the flow finds it done)
    trainable_set(runtime(), data, options)
    trained = train_flow(data=str(data) if data else None, options=options)
    v = trained.validation
    eer = "n/a" if v.eer is None else f"{100 * v.eer:.2f}%"
    typer.echo(
        f"model version {trained.name} (id {trained.id}): validation EER "
        f"{eer} on {len(v.val_identities)} unseen people ({v.members} member(s)), best "
        f"epoch {v.best_epoch}/{v.epochs_run}, {v.seconds:.0f} s"
    )
    if as_json:
        emit_json(
            {
                "model_version": trained.name,
                "model_version_id": trained.id,
                "checkpoint": trained.checkpoint,
                "validation": v.as_dict(),
            }
        )


# ---------------------------------------------------------------- models and index


@app.command("models")
def models_cmd(as_json: JsonOpt = False) -> None:
    """List registered model versions with their validation EER and the scoring they record
    (template, test-time flip, face choice in labelled photos)."""
    from pipelines.services.models import ModelRef
    from storage.registry import list_model_versions

    rt = runtime()
    with rt.sessions() as s:
        rows = [
            {
                "id": m.id,
                "name": m.name,
                "architecture": m.architecture,
                "distance": m.distance,
                "margin": m.margin,
                "embedding_dim": m.embedding_dim,
                "eer": (m.metrics.get("validation") or {}).get("eer"),
                "created_at": m.created_at.isoformat(),
                "scoring": ModelRef.of(m).scoring.to_dict(),
            }
            for m in list_model_versions(session=s)
        ]
    for r in rows:
        eer = "n/a" if r["eer"] is None else f"{100 * r['eer']:.2f}%"
        typer.echo(
            f"[{r['id']}] {r['name']}  {r['architecture']} {r['distance']} "
            f"dim={r['embedding_dim']} val EER {eer}  template {r['scoring']['template']}, "
            f"flip {'on' if r['scoring']['flip_average'] else 'off'}, multiple faces "
            f"{r['scoring']['multiple_faces']}"
        )
    if as_json:
        emit_json({"models": rows})
