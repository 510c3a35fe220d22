"""``siamid gallery import|list|show|remove``: the people and photos of the gallery."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.options import (
    DaskOpt,
    DaskWorkersOpt,
    DetectorOpt,
    GalleryMultipleOpt,
    JsonOpt,
    MultipleChoice,
    WaitOpt,
)
from pipelines.cli.output import (
    CliError,
    echo_failed_chunks,
    emit_json,
    exit_if_chunks_failed,
    progress_bar,
    quiet_flow_failures,
    runtime,
)

app = typer.Typer(help="Import, list, show and remove gallery identities.", no_args_is_help=True)

IdentityArg = Annotated[str, typer.Argument(help="The identity's exact name.")]


@app.command("import")
def gallery_import(
    path: Annotated[
        Path | None, typer.Argument(help="ImageFolder root: PATH/<identity>/<image>.")
    ] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV with columns path,identity.")] = None,
    allow_outside: Annotated[
        bool,
        typer.Option(
            "--allow-outside", help="Accept manifest paths outside the manifest's folder."
        ),
    ] = False,
    min_side: Annotated[
        int | None,
        typer.Option(help="Reject images with a side below this (default SIAMID_MIN_IMAGE_SIDE)."),
    ] = None,
    detect: Annotated[
        bool,
        typer.Option(
            "--detect/--no-detect",
            help="Detect faces in the new images and store them (for --faces detect models).",
        ),
    ] = True,
    multiple_faces: GalleryMultipleOpt = MultipleChoice["largest"],
    dask: DaskOpt = None,
    dask_workers: DaskWorkersOpt = None,
    wait: WaitOpt = 0.0,
    detector: DetectorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a gallery; bad files are recorded as rejected with a reason and the import goes on."""
    from pipelines.cluster import ClusterSpec
    from pipelines.services.gallery import import_items, read_manifest, scan_image_folder
    from siamese.images import DecodeLimits

    if (path is None) == (manifest is None):
        raise CliError("give either an ImageFolder PATH or --manifest FILE.csv (one of them)")
    cluster = ClusterSpec.from_options(dask, dask_workers)
    items = (
        read_manifest(manifest, allow_outside=allow_outside)
        if manifest
        else scan_image_folder(path)
    )  # type: ignore[arg-type]
    rt = runtime()
    limits = rt.limits if min_side is None else DecodeLimits(min_side, rt.limits.max_pixels)
    with progress_bar("importing", enabled=len(items) >= 50) as update:
        summary = import_items(items, sessions=rt.sessions, limits=limits, progress=update)
    for source, reason, detail in summary.rejected_files[:50]:
        typer.echo(f"rejected {source}: {reason} ({detail})", err=True)
    if len(summary.rejected_files) > 50:
        typer.echo(f"... and {len(summary.rejected_files) - 50} more rejected", err=True)
    d = summary.as_dict()
    typer.echo(
        f"seen {d['seen']}  new {d['new']}  duplicates {d['duplicates']}  "
        f"rejected {d['rejected']}  conflicts {d['conflicts']}  "
        f"new identities {d['new_identities']}"
    )
    failed_chunks: list[dict[str, object]] = []
    if detect and cluster is None:
        from pipelines.services.indexing import detect_pending

        with progress_bar("detecting faces", enabled=summary.new >= 50) as update:
            found = detect_pending(
                rt, multiple=multiple_faces.value, progress=update, wait_seconds=wait
            )
        d["faces"], detected, counts = found.as_dict(), found.detected, found.outcomes
    elif detect:
        from collections import Counter

        from pipelines.cluster import flow_on
        from pipelines.flows.detect import detect_flow

        quiet_flow_failures()
        with flow_on(detect_flow, cluster) as on_cluster:
            run = on_cluster(multiple=multiple_faces.value, wait_seconds=wait)
        d["faces"] = {**run.faces, "failed_chunks": run.failed_chunks}
        detected, counts, failed_chunks = run.detected, Counter(run.outcomes), run.failed_chunks
    if detect:
        typer.echo(
            f"faces ({detected} photos detected now): with one face {counts['ok']}  "
            f"no_face {counts['no_face']}  multiple_faces {counts['multiple_faces']}  "
            f"too_small {counts['too_small']}  unreadable {counts['error']}"
        )
    echo_failed_chunks(failed_chunks, "photos")
    if as_json:
        emit_json(d)
    exit_if_chunks_failed(
        failed_chunks,
        "run the import again once the workers can reach the photos; it adds nothing twice and "
        "detects the rest",
    )


@app.command("list")
def gallery_list(as_json: JsonOpt = False) -> None:
    """List identities with their accepted and rejected image counts."""
    from storage.identities import list_identities

    rt = runtime()
    with rt.sessions() as s:
        rows = list_identities(session=s)
    for r in rows:
        typer.echo(f"{r.name}\taccepted={r.accepted}\trejected={r.rejected}")
    typer.echo(f"{len(rows)} identities, {sum(r.accepted for r in rows)} accepted images")
    if as_json:
        emit_json({"identities": [asdict(r) for r in rows]})


@app.command("show")
def gallery_show(
    identity: IdentityArg,
    as_json: JsonOpt = False,
) -> None:
    """Show one identity and its images (status, size, reason)."""
    from pipelines.services.identities import identity_view

    view = identity_view(runtime(), identity)
    typer.echo(f"{view.name} (id {view.id}): {len(view.images)} images")
    for im in view.images:
        extra = f"{im.width}x{im.height} {im.mode}" if im.status == "accepted" else im.reject_reason
        typer.echo(f"  [{im.id}] {im.status:8} {extra}  {im.source}")
    if as_json:
        emit_json(view.to_dict())


@app.command("remove")
def gallery_remove(
    identity: IdentityArg,
    as_json: JsonOpt = False,
) -> None:
    """Remove an identity and its images; its vectors leave the next published index."""
    from pipelines.services.enrolment import remove_identity

    rt = runtime()
    removed = remove_identity(rt, identity)
    typer.echo(f"removed {identity!r} and {len(removed)} images")
    if as_json:
        emit_json({"identity": identity, "removed_images": len(removed)})
