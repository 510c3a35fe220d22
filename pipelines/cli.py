"""The ``siamid`` command line. Heavy imports (torch, faiss, prefect) happen inside commands."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipelines.services.crops import FACE_MODES
from pipelines.services.detection import MULTIPLE_FACES
from pipelines.services.scoring import CALIBRATE_ON, TEMPLATES
from pipelines.settings import Settings
from siamese.config import ARCHS, BACKBONES, DISTANCES, LOSSES, TUNE_MODES

if TYPE_CHECKING:
    from pipelines.runtime import Runtime

app = typer.Typer(
    name="siamid",
    help="Open-set face identification with Siamese networks, FAISS and Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
gallery_app = typer.Typer(
    help="Import, list, show and remove gallery identities.", no_args_is_help=True
)
data_app = typer.Typer(help="Make data: seeded synthetic face galleries.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(gallery_app, name="gallery")
app.add_typer(data_app, name="data")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]
BACKBONE_HELP = (
    "small-cnn or chopra2005 (trained from scratch) or dlib-resnet (dlib's pretrained face "
    "ResNet in torch, a head trained with the contrastive loss; implies --faces detect)."
)
FacesChoice = StrEnum("FacesChoice", {m: m for m in FACE_MODES})  # type: ignore[misc]
MultipleChoice = StrEnum("MultipleChoice", {m: m for m in MULTIPLE_FACES})  # type: ignore[misc]
FacesCheck = Annotated[
    FacesChoice | None,
    typer.Option(
        "--faces",
        help="The crop mode you expect (whole images or detected faces); refused when it "
        "differs from the model's. Default: the model's.",
    ),
]


class CliError(Exception):
    """An error already phrased for the user; the command exits non-zero with it."""


#: Loggers whose INFO lines are siamid's progress (Prefect's own stay at WARNING).
PROGRESS_LOGGERS = ("pipelines", "siamese", "faces", "index", "storage")


def configure_logging(verbose: bool) -> None:
    """Progress on stderr: rich on a terminal, plain lines otherwise; DEBUG with --verbose."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_siamid", False):
            root.removeHandler(h)
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, show_level=verbose, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler._siamid = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in PROGRESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


class UserErrorFilter(logging.Filter):
    """Drops Prefect's report (with traceback) of a run that failed on a user error.

    The command line prints that error itself as one ``error:`` line; tracebacks are for bugs.
    """

    def __init__(self, errors: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.errors = errors
        found: set[str] = set()
        todo = list(errors)
        while todo:  # the classes and their subclasses, by the names Prefect's lines show
            cls = todo.pop()
            found.add(cls.__name__)
            todo.extend(cls.__subclasses__())
        self.names = tuple(sorted(found))

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            return not isinstance(exc, self.errors)
        if record.name.startswith("prefect") and record.levelno >= logging.ERROR:
            return not any(name in record.getMessage() for name in self.names)
        return True


def quiet_flow_failures() -> None:
    """Attach :class:`UserErrorFilter` to the handlers Prefect set up (call after importing
    a flow, which imports Prefect); with ``--verbose`` Prefect's reports stay."""
    from pipelines.errors import user_errors

    if logging.getLogger("pipelines").level <= logging.DEBUG:
        return
    quiet = UserErrorFilter((CliError, *user_errors()))
    names = ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine")
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, UserErrorFilter) for f in handler.filters):
                handler.addFilter(quiet)


def main() -> None:
    from pipelines.errors import user_errors

    configure_logging(verbose=False)
    try:
        app()
    except (CliError, *user_errors()) as exc:
        message = str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug lines and Prefect's own logs.")
    ] = False,
) -> None:

    from pipelines.settings import prefect_defaults

    configure_logging(verbose)
    prefect_defaults(verbose=verbose)


def emit_json(obj: dict[str, Any]) -> None:
    """One JSON object on one line: the last line of stdout."""
    sys.stdout.flush()
    typer.echo(json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str))


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; a no-op callback when disabled or not a terminal and short."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    if not enabled:
        yield lambda done, total: None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def runtime() -> Runtime:
    from pipelines.runtime import open_runtime

    return open_runtime(Settings())


# ---------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the database schema (SQLite by default, PostgreSQL by URL)."""
    from pipelines import migrations
    from pipelines.runtime import safe_url

    settings = Settings()
    settings.ensure_dirs()
    migrations.upgrade(settings.db_url, revision)
    typer.echo(f"database at {revision}: {safe_url(settings.db_url)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")],
) -> None:
    """Migrate the schema down to REVISION (``base`` drops everything siamid created)."""
    from pipelines import migrations

    migrations.downgrade(Settings().db_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and the newest one available."""
    from pipelines import migrations
    from storage.db import make_engine

    url = Settings().db_url
    engine = make_engine(url)
    typer.echo(
        f"current: {migrations.current_revision(engine)}  head: {migrations.head_revision(url)}"
    )


# ---------------------------------------------------------------- gallery


DaskOpt = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDRESS",
        help="Run the chunks on the workers of this Dask scheduler (tcp://HOST:8786).",
    ),
]
DaskWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--dask-workers",
        min=1,
        metavar="N",
        help="Run the chunks on a local Dask cluster of N worker processes, 1 thread each.",
    ),
]
WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        metavar="SECONDS",
        help="Wait this long for another run on the same database to finish (0: exit at once).",
    ),
]


@gallery_app.command("import")
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
    multiple_faces: Annotated[
        MultipleChoice,
        typer.Option(
            help="A photo of several people: enrol the largest face (the others are recorded) "
            "or refuse the photo."
        ),
    ] = MultipleChoice["largest"],
    dask: DaskOpt = None,
    dask_workers: DaskWorkersOpt = None,
    wait: WaitOpt = 0.0,
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
        from pipelines.services.detection import detect_gallery

        with progress_bar("detecting faces", enabled=summary.new >= 50) as update:
            found = detect_gallery(rt, multiple=multiple_faces.value, progress=update)
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
    for c in failed_chunks:
        typer.echo(f"chunk {c['chunk']} ({c['images']} photos) failed: {c['reason']}", err=True)
    if as_json:
        emit_json(d)
    if failed_chunks:
        typer.echo(
            f"{len(failed_chunks)} chunk(s) failed: run the import again once the workers can "
            "reach the photos; it adds nothing twice and detects the rest",
            err=True,
        )
        raise typer.Exit(1)


@gallery_app.command("list")
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
        emit_json(
            {
                "identities": [
                    {"id": r.id, "name": r.name, "accepted": r.accepted, "rejected": r.rejected}
                    for r in rows
                ]
            }
        )


@gallery_app.command("show")
def gallery_show(
    identity: Annotated[str, typer.Argument(help="The identity's exact name.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one identity and its images (status, size, reason)."""
    from storage.identities import find_identity
    from storage.images import images_of_identity

    rt = runtime()
    with rt.sessions() as s:
        ident = find_identity(session=s, name=identity)
        images = images_of_identity(session=s, identity_id=ident.id)
        info = {
            "id": ident.id,
            "name": ident.name,
            "attributes": ident.attributes,
            "images": [
                {
                    "id": im.id,
                    "source": im.source_uri,
                    "status": im.status,
                    "width": im.width,
                    "height": im.height,
                    "mode": im.mode,
                    "reject_reason": im.reject_reason,
                    "sha256": im.sha256,
                }
                for im in images
            ],
        }
    typer.echo(f"{info['name']} (id {info['id']}): {len(images)} images")
    for im in info["images"]:
        extra = (
            f"{im['width']}x{im['height']} {im['mode']}"
            if im["status"] == "accepted"
            else im["reject_reason"]
        )
        typer.echo(f"  [{im['id']}] {im['status']:8} {extra}  {im['source']}")
    if as_json:
        emit_json(info)


@gallery_app.command("remove")
def gallery_remove(
    identity: Annotated[str, typer.Argument(help="The identity's exact name.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove an identity and its images; its vectors leave the next published index."""
    from pipelines.services.enrolment import remove_identity

    rt = runtime()
    removed = remove_identity(rt, identity)
    typer.echo(f"removed {identity!r} and {len(removed)} images")
    if as_json:
        emit_json({"identity": identity, "removed_images": len(removed)})


# ---------------------------------------------------------------- data


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write PATH/<identity>/<image>.png into.")],
    identities: Annotated[int, typer.Option(min=1, help="Number of people.")] = 40,
    per_identity: Annotated[int, typer.Option(min=1, help="Images per person.")] = 10,
    seed: Annotated[int, typer.Option(help="Same seed -> byte-identical files.")] = 0,
    size: Annotated[str, typer.Option(help="Image size WxH.")] = "92x112",
    first_identity: Annotated[
        int,
        typer.Option(min=0, help="Index of the first person: blocks of people that never overlap."),
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Write a seeded synthetic face gallery (an ImageFolder)."""
    from siamese.synthetic import generate_gallery

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise CliError(f"--size must look like 92x112 (width x height), got {size!r}") from None
    if w < 16 or h < 16:
        raise CliError(f"--size {size} is too small; use at least 16x16")
    files = generate_gallery(
        out,
        identities=identities,
        per_identity=per_identity,
        seed=seed,
        size=(w, h),
        first_identity=first_identity,
    )
    typer.echo(f"wrote {len(files)} images of {identities} identities to {out}")
    if as_json:
        emit_json({"out": str(out), "images": len(files), "identities": identities, "seed": seed})


# ---------------------------------------------------------------- train


ArchChoice = StrEnum("ArchChoice", {a: a for a in ARCHS})  # type: ignore[misc]
LossChoice = StrEnum("LossChoice", {a: a for a in LOSSES})  # type: ignore[misc]
DistanceChoice = StrEnum("DistanceChoice", {a: a for a in DISTANCES})  # type: ignore[misc]
BackboneChoice = StrEnum("BackboneChoice", {b: b for b in BACKBONES})  # type: ignore[misc]
TuneChoice = StrEnum("TuneChoice", {m: m for m in TUNE_MODES})  # type: ignore[misc]
TuneOpt = Annotated[
    TuneChoice | None,
    typer.Option(
        help="dlib-resnet with --epochs: train a head on its descriptors (default) or fine-tune "
        "its last stages at a low learning rate (last-stages)."
    ),
]

FlipOpt = Annotated[
    bool,
    typer.Option(
        "--flip-average",
        help="dlib-resnet: each face's descriptor averages its chip's and the mirrored chip's "
        "(twice the embedding time; lower EER on celeba_wild). Recorded with the model.",
    ),
]


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
    epochs: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Maximum epochs (dlib-resnet: of its --tune mode; the default, 0, "
            "registers the pretrained network as it is).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds split, weights, sampling, augmentation.")] = 0,
    backbone: Annotated[BackboneChoice, typer.Option(help=BACKBONE_HELP)] = BackboneChoice[
        "small-cnn"
    ],
    members: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Encoders trained on their own seeds and used side by side (default 3; "
            "1 trains and embeds 3x faster).",
        ),
    ] = None,
    faces: Annotated[
        FacesChoice | None,
        typer.Option(
            help="whole: every image is already a face crop (AT&T); detect: detect and align "
            "the face in each photo. Recorded with the model. Default: detect for dlib-resnet, "
            "else whole."
        ),
    ] = None,
    tune: TuneOpt = None,
    flip_average: FlipOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a Siamese encoder with the contrastive loss and register a model version."""
    from pipelines.flows.train import train_flow
    from pipelines.services.training import TrainOptions

    quiet_flow_failures()

    options = TrainOptions(
        arch=arch.value,
        loss=loss.value if loss else None,
        distance=distance.value,
        margin=margin,
        epochs=epochs,
        seed=seed,
        backbone=backbone.value,
        members=members,
        faces=faces.value if faces else None,
        tune=tune.value if tune else None,
        flip_average=flip_average,
    )
    try:
        options.configs()  # refuse bad combinations before Prefect starts
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if data is not None and not data.is_dir():
        raise CliError(f"--data {data} is not a folder laid out as PATH/<identity>/<image>")
    runtime()  # create and migrate the database up front
    trained = train_flow(data=str(data) if data else None, options=options)
    v = trained.validation
    eer = "n/a" if v["eer"] is None else f"{100 * v['eer']:.2f}%"
    typer.echo(
        f"model version {trained.name} (id {trained.id}): validation EER "
        f"{eer} on {len(v['val_identities'])} unseen people ({v['members']} member(s)), best "
        f"epoch {v['best_epoch']}/{v['epochs_run']}, {v['seconds']:.0f} s"
    )
    if as_json:
        emit_json(
            {
                "model_version": trained.name,
                "model_version_id": trained.id,
                "checkpoint": trained.checkpoint,
                "validation": v,
            }
        )


# ---------------------------------------------------------------- models and index


@app.command("models")
def models_cmd(as_json: JsonOpt = False) -> None:
    """List registered model versions with their validation EER."""
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
            }
            for m in list_model_versions(session=s)
        ]
    for r in rows:
        eer = "n/a" if r["eer"] is None else f"{100 * r['eer']:.2f}%"
        typer.echo(
            f"[{r['id']}] {r['name']}  {r['architecture']} {r['distance']} "
            f"dim={r['embedding_dim']} val EER {eer}"
        )
    if as_json:
        emit_json({"models": rows})


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
    as_json: JsonOpt = False,
) -> None:
    """Embed images lacking a vector, drop removed ones, publish a new index version."""
    from pipelines.cluster import ClusterSpec, flow_on
    from pipelines.flows.embed import embed_flow

    quiet_flow_failures()
    cluster = ClusterSpec.from_options(dask, dask_workers)
    runtime()
    with flow_on(embed_flow, cluster) as run:
        out = run(
            model=model,
            factory=factory,
            full=full,
            batch_size=batch_size,
            workers=workers,
            chunk_size=chunk_size,
            faces=faces.value if faces else None,
            wait_seconds=wait,
        )
    for f in out.failed_images[:20]:
        typer.echo(f"could not embed {f['source']}: {f['reason']}", err=True)
    for c in out.failed_chunks:
        typer.echo(f"chunk {c['chunk']} ({c['images']} images) failed: {c['reason']}", err=True)
    state = "published" if out.published else "unchanged"
    typer.echo(
        f"model {out.model_version}: embedded {out.embedded}, skipped {out.skipped}, "
        f"failed {out.failed}, removed {out.removed}; index version "
        f"{out.index_version} {state} ({out.factory}, {out.vectors} vectors)"
    )
    if as_json:
        emit_json(out.model_dump(exclude={"failed_images"}))
    if out.failed_chunks:
        typer.echo(
            f"{len(out.failed_chunks)} chunk(s) failed: their images stay pending; run "
            "`siamid embed` again once the workers can reach them",
            err=True,
        )
        raise typer.Exit(1)


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


# ---------------------------------------------------------------- identification


TemplateChoice = StrEnum("TemplateChoice", {t: t for t in TEMPLATES})  # type: ignore[misc]
CalibrateOn = StrEnum("CalibrateOn", {c: c for c in CALIBRATE_ON})  # type: ignore[misc]


@app.command("identify")
def identify_cmd(
    target: Annotated[
        Path | None, typer.Argument(help="A probe image or a folder of them.")
    ] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV with a `path` column.")] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Candidate identities to return.")] = 5,
    threshold: Annotated[
        float | None,
        typer.Option(help="Accept distance; default: the calibrated one, else margin/2."),
    ] = None,
    template: Annotated[
        TemplateChoice,
        typer.Option(help="Score identities by their best image or their mean template."),
    ] = TemplateChoice["best"],
    out: Annotated[Path | None, typer.Option(help="Write results to .parquet or .csv.")] = None,
    faces: FacesCheck = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per probe (per face in detect mode).")
    ] = False,
) -> None:
    """Identify probes against the published index: a match within the threshold, or unknown."""
    from pipelines.services.gallery import read_manifest
    from pipelines.services.identification import Identifier, probe_files

    if (target is None) == (manifest is None):
        raise CliError("give a probe IMAGE or DIR, or --manifest FILE.csv (one of them)")
    if target is not None:
        paths = probe_files(target)
    else:
        paths = [it.path for it in read_manifest(manifest, allow_outside=True)]  # type: ignore[arg-type]
    if not paths:
        raise CliError(f"no image files found in {target or manifest}")
    rt = runtime()
    ident = Identifier(
        rt,
        threshold=threshold,
        top_k=top_k,
        template=template.value,
        faces=faces.value if faces else None,
    )
    decisions = ident.identify(paths)
    for d in decisions:
        where = "" if d.box is None else " face at [" + ", ".join(f"{v:.0f}" for v in d.box) + "]"
        if as_json:
            emit_json(d.as_dict())
        elif d.decision in ("match", "unknown"):
            who = d.identity if d.decision == "match" else "unknown"
            dist = "n/a" if d.distance is None else f"{d.distance:.4f}"
            typer.echo(
                f"{d.probe}:{where} {who} (best distance {dist}, threshold {d.threshold:.4f})"
            )
        else:
            typer.echo(f"{d.probe}:{where} {d.decision}: {d.error}")
    if out is not None:
        _write_table([d.as_dict() for d in decisions], out)


def _write_table(rows: list[dict[str, Any]], out: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame["candidates"] = [json.dumps(r["candidates"], ensure_ascii=False) for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        frame.to_csv(out, index=False)
    elif out.suffix.lower() == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        raise CliError(f"--out {out}: use a .parquet or .csv file name")


@app.command("calibrate")
def calibrate_cmd(
    data: Annotated[
        list[Path],
        typer.Option(
            help="ImageFolder of people who are NOT enrolled (non-mated searches); repeat "
            "--data to pool several folders, e.g. also the people the encoder was trained on."
        ),
    ],
    target_fpir: Annotated[
        float, typer.Option(help="Target false-positive identification rate.")
    ] = 0.01,
    faces: FacesCheck = None,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate the reject threshold at a target FPIR and store it with the model and index."""
    from pipelines.services.calibration import calibrate

    rt = runtime()
    res = calibrate(rt, data, target_fpir, faces=faces.value if faces else None)
    typer.echo(
        f"threshold {res.threshold:.4f} at target FPIR {target_fpir:g} (realised "
        f"{res.realised_fpir:.4f} on {res.nonmated_searches} non-mated searches); stored "
        f"for model {res.model_version}, index version {res.index_version}"
    )
    if as_json:
        emit_json(res.as_dict())


# ---------------------------------------------------------------- evaluation


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
    target_fpir: Annotated[float, typer.Option(help="FPIR the threshold is set for.")] = 0.01,
    seed: Annotated[int, typer.Option(help="Seeds the splits and training.")] = 0,
    model: Annotated[
        str | None,
        typer.Option(help="Evaluate this model version instead of training one per fold."),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            min=0, help="Training epochs per fold (dlib-resnet: of its head; default 0, zero-shot)."
        ),
    ] = None,
    backbone: Annotated[
        BackboneChoice, typer.Option(help="The fold encoders' network.")
    ] = BackboneChoice["small-cnn"],
    members: Annotated[
        int | None,
        typer.Option(min=1, help="Ensemble members of each fold's encoder (default 3)."),
    ] = None,
    template: Annotated[
        TemplateChoice,
        typer.Option(
            help="Score a known person by the nearest enrolled image or the mean of them."
        ),
    ] = TemplateChoice["best"],
    calibrate_on: Annotated[
        CalibrateOn,
        typer.Option(
            help="Non-mated searches that set the threshold: the calibration unknowns, and "
            "by default also the people the encoder was trained on."
        ),
    ] = CalibrateOn["unknown+train"],
    faces: Annotated[
        FacesChoice | None,
        typer.Option(
            help="whole images or detected, aligned faces (photos without one are left out); "
            "default: the --model's mode, else whole."
        ),
    ] = None,
    tune: TuneOpt = None,
    flip_average: FlipOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Identity-disjoint open-set evaluation: DIR/FPIR, FNIR, rank-1/CMC, DET; HTML report."""
    from pipelines.flows.evaluate import evaluate_flow
    from pipelines.services.evaluation import Protocol
    from pipelines.services.training import TrainOptions

    quiet_flow_failures()

    if not data.is_dir():
        raise CliError(f"--data {data} is not a folder laid out as PATH/<person>/<image>")
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
        template=template.value,
        calibrate_on=calibrate_on.value,
        faces=faces.value if faces else None,
        backbone=backbone.value,
        tune=tune.value if tune else None,
        flip_average=flip_average,
    )
    if model is None:
        from pipelines.services.evaluation import fold_options

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
        f"rank-1 {m['rank1']:.3f}  DIR@FPIR=1% {m['dir_at_fpir']['0.01']:.3f}  "
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
    epochs: Annotated[
        int | None,
        typer.Option(
            min=0, help="Training epochs (dlib-resnet: of its head; default 0, zero-shot)."
        ),
    ] = None,
    backbone: Annotated[
        BackboneChoice, typer.Option(help="The encoders' network.")
    ] = BackboneChoice["small-cnn"],
    folds: Annotated[int, typer.Option(min=1, help="Evaluation folds.")] = 1,
    members: Annotated[
        int, typer.Option(min=1, help="Ensemble members of the demo's encoders.")
    ] = 1,
    faces: Annotated[
        FacesChoice | None,
        typer.Option(
            help="whole images (synthetic, AT&T) or detected faces (default: the "
            "backbone's: detect for dlib-resnet, else whole)."
        ),
    ] = None,
    tune: TuneOpt = None,
    flip_average: FlipOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the whole chain: data, import, train, embed, calibrate, identify, evaluate."""
    from pipelines.demo import run_demo, summary_table

    quiet_flow_failures()

    if data is not None and not data.is_dir():
        raise CliError(f"--data {data} is not a folder laid out as PATH/<person>/<image>")
    result = run_demo(
        runtime(),
        data.resolve() if data else None,
        seed=seed,
        epochs=epochs,
        folds=folds,
        members=members,
        faces=faces.value if faces else None,
        backbone=backbone.value,
        tune=tune.value if tune else None,
        flip_average=flip_average,
    )
    typer.echo(summary_table(result))
    if as_json:
        emit_json(result.as_dict())


from pipelines.api.commands import register as _register_api  # noqa: E402

_register_api(app)

if __name__ == "__main__":
    main()
