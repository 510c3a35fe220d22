"""Errors a user can cause, through the installed console script: exit 2, one ``error:`` line
naming what to do, and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from siamese.synthetic import generate_gallery

SIAMID = Path(sys.executable).with_name("siamid")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-errors")
    generate_gallery(root / "people", identities=2, per_identity=2, seed=0)
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not an image")
    return root


CASES = {
    "identify before embed": (["identify", "{people}/person_0000"], "siamid embed"),
    "calibrate before embed": (["calibrate", "--data", "{people}"], "siamid embed"),
    "embed before train": (["embed"], "siamid train"),
    "evaluate --model before train": (
        ["evaluate", "--data", "{people}", "--report", "{ws}/r", "--model", "7"],
        "siamid models",
    ),
    "unknown model version": (["embed", "--model", "no-such-model"], "siamid models"),
    "train on an empty gallery": (["train"], "gallery import"),
    "probe folder with no images": (["identify", "{ws}/notes"], "no image files"),
    "probe that does not exist": (["identify", "{ws}/missing.jpg"], "does not exist"),
    "import of a missing folder": (["gallery", "import", "{ws}/nowhere"], "does not exist"),
    "unknown identity": (["gallery", "show", "nobody"], "siamid gallery list"),
    "database that cannot connect": (["models"], "SIAMID_DATABASE_URL"),
    "--tune without the pretrained backbone": (
        ["train", "--data", "{people}", "--tune", "last-stages"],
        "--backbone dlib-resnet",
    ),
    "--flip-average without the pretrained backbone": (
        ["evaluate", "--data", "{people}", "--report", "{ws}/r", "--flip-average"],
        "--backbone dlib-resnet",
    ),
    "--flip-average with --tune last-stages": (
        [
            "train",
            "--backbone",
            "dlib-resnet",
            "--epochs",
            "1",
            "--tune",
            "last-stages",
            "--flip-average",
        ],
        "--tune last-stages",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_exit_2_no_traceback(
    workspace: Path, tmp_path: Path, case: str
) -> None:
    args, hint = CASES[case]
    env = {**os.environ, "SIAMID_HOME": str(tmp_path / "home"), "SIAMID_TORCH_THREADS": "1"}
    env.pop("SIAMID_DATABASE_URL", None)
    if case == "database that cannot connect":
        env["SIAMID_DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/siamid"
    argv = [a.format(ws=workspace, people=workspace / "people") for a in args]
    proc = subprocess.run(
        [str(SIAMID), *argv], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert hint in errors[0], errors[0]
