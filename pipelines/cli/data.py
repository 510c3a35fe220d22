"""``siamid data synth``: seeded synthetic face galleries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.options import JsonOpt
from pipelines.cli.output import CliError, emit_json

app = typer.Typer(help="Make data: seeded synthetic face galleries.", no_args_is_help=True)


@app.command("synth")
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
