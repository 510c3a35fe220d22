"""Errors a user can cause, through the installed console script: exit 2, one ``error:`` line
naming what to do, and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


#: Run through the installed console script in a process of their own; the rest run
#: ``main()`` in this process (the same code, without an interpreter start per case).
THROUGH_THE_SCRIPT = ("embed before train", "database that cannot connect")


def _environment(tmp_path: Path, case: str) -> dict[str, str]:
    env = {"SIAMID_HOME": str(tmp_path / "home"), "SIAMID_TORCH_THREADS": "1"}
    if case == "database that cannot connect":
        env["SIAMID_DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/siamid"
    return env


def _stderr_in_process(
    argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> tuple[int, str]:
    from pipelines.cli import main

    monkeypatch.delenv("SIAMID_DATABASE_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["siamid", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0), capsys.readouterr().err


def _stderr_of_the_script(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    full = {k: v for k, v in os.environ.items() if k != "SIAMID_DATABASE_URL"}
    proc = subprocess.run(
        [str(SIAMID), *argv], capture_output=True, text=True, env={**full, **env}, timeout=300
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_exit_2_no_traceback(
    workspace: Path,
    tmp_path: Path,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args, hint = CASES[case]
    argv = [a.format(ws=workspace, people=workspace / "people") for a in args]
    env = _environment(tmp_path, case)
    if case in THROUGH_THE_SCRIPT:
        code, stderr = _stderr_of_the_script(argv, env)
    else:
        code, stderr = _stderr_in_process(argv, env, monkeypatch, capsys)
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert hint in errors[0], errors[0]
