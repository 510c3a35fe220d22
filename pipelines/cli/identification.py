"""``siamid identify`` and ``siamid calibrate``: open-set answers and their threshold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.options import (
    DetectorOpt,
    FacesCheck,
    JsonOpt,
    TargetFpirOpt,
    TemplateOpt,
    chosen,
)
from pipelines.cli.output import CliError, emit_json, runtime
from siamese.openset import DEFAULT_TARGET_FPIR

app = typer.Typer()


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
    template: TemplateOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write results to .parquet or .csv.")] = None,
    faces: FacesCheck = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per probe (per face in detect mode).")
    ] = False,
    detector: DetectorOpt = None,
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
        template=chosen(template),
        faces=chosen(faces),
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
    target_fpir: TargetFpirOpt = DEFAULT_TARGET_FPIR,
    faces: FacesCheck = None,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate the reject threshold at a target FPIR and store it with the model and index."""
    from pipelines.services.calibration import calibrate

    rt = runtime()
    res = calibrate(rt, data, target_fpir, faces=chosen(faces))
    typer.echo(
        f"threshold {res.threshold:.4f} at target FPIR {target_fpir:g} (realised "
        f"{res.realised_fpir:.4f} on {res.nonmated_searches} non-mated searches); stored "
        f"for model {res.model_version}, index version {res.index_version}"
    )
    if as_json:
        emit_json(res.as_dict())
