"""``siamid embed``, ``siamid doctor`` and ``siamid serve``: the index and its schedule."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.cli.options import (
    DaskOpt,
    DaskWorkersOpt,
    DetectorOpt,
    FacesCheck,
    JsonOpt,
    WaitOpt,
    chosen,
)
from pipelines.cli.output import (
    echo_failed_chunks,
    emit_json,
    exit_if_chunks_failed,
    quiet_flow_failures,
    runtime,
)

app = typer.Typer()


@app.command("embed")
def embed_cmd(
    model: Annotated[
        str | None, typer.Option(help="Model version (name or id); default: the newest one.")
    ] = None,
    factory: Annotated[
        str | None,
        typer.Option(help="FAISS index_factory string; default: chosen from the gallery size."),
    ] = None,
    full: Annotated[
        bool,
        typer.Option("--full", help="Re-embed every image and rebuild the index from scratch."),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 256,
    workers: Annotated[
        int,
        typer.Option(
            min=0, help="DataLoader decode processes (0 on Dask workers: they decode themselves)."
        ),
    ] = 1,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Images per task (what a retry or another worker redoes).")
    ] = 2048,
    dask: DaskOpt = None,
    dask_workers: DaskWorkersOpt = None,
    wait: WaitOpt = 0.0,
    faces: FacesCheck = None,
    detector: DetectorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Embed images lacking a vector, drop removed ones, publish a new index version."""
    from pipelines.cluster import ClusterSpec, flow_on
    from pipelines.flows.embed import embed_flow

    quiet_flow_failures()
    cluster = ClusterSpec.from_options(dask, dask_workers)
    from pipelines.services.models import resolve_model

    # an unknown or unusable model, or --faces other than its own, fails before Prefect starts
    ref = resolve_model(runtime().sessions, model)
    ref.crop.check(chosen(faces), ref.name)
    with flow_on(embed_flow, cluster) as run:
        out = run(
            model=model,
            factory=factory,
            full=full,
            batch_size=batch_size,
            workers=workers,
            chunk_size=chunk_size,
            faces=chosen(faces),
            wait_seconds=wait,
        )
    for f in out.failed_images[:20]:
        typer.echo(f"could not embed {f['source']}: {f['reason']}", err=True)
    echo_failed_chunks(out.failed_chunks, "images")
    state = "published" if out.published else "unchanged"
    typer.echo(
        f"model {out.model_version}: embedded {out.embedded}, skipped {out.skipped}, "
        f"failed {out.failed}, removed {out.removed}; index version "
        f"{out.index_version} {state} ({out.factory}, {out.vectors} vectors)"
    )
    if as_json:
        emit_json(out.model_dump(exclude={"failed_images"}))
    exit_if_chunks_failed(
        out.failed_chunks,
        "their images stay pending; run `siamid embed` again once the workers can reach them",
    )


@app.command("doctor")
def doctor_cmd(
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Rebuild the index from the vector store and publish it."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check that the published index and SQL agree; exit 1 on any disagreement."""
    from pipelines.services import doctor

    rt = runtime()
    repaired = None
    if repair:
        repaired = doctor.repair(rt)
        typer.echo(
            f"rebuilt index version {repaired['index_version']} "
            f"({repaired['vectors']} vectors) from the vector store"
        )
    report = doctor.diagnose(rt)
    for p in report.problems:
        typer.echo(f"problem: {p}")
    if report.ok:
        typer.echo(
            f"ok: index version {report.index_version} agrees with SQL "
            f"({report.counts.get('index_vectors', 0)} vectors)"
        )
    if as_json:
        emit_json({**report.as_dict(), "repaired": repaired})
    if not report.ok:
        raise typer.Exit(1)


@app.command("serve")
def serve_cmd(
    cron: Annotated[
        str, typer.Option(help="When to re-embed (cron, server time zone).")
    ] = "0 3 * * *",
    name: Annotated[str, typer.Option(help="Deployment name.")] = "siamid-embed",
) -> None:
    """Serve the embed flow as a Prefect deployment on a cron schedule (needs a Prefect server)."""
    from pipelines.schedule import serve_embed

    serve_embed(cron=cron, name=name)
