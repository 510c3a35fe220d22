"""The detector choice (``--detector`` / ``SIAMID_DETECTOR``): checked, in the detector's name,
and a changed choice re-detects a gallery incrementally."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from faces.methods import DEFAULT_DETECTION, DETECTION_METHODS
from pipelines.cli import app
from pipelines.settings import Settings
from tests.faces.synth import ATT, need_dir


def test_an_unknown_detector_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAMID_DETECTOR", "yolo")
    with pytest.raises(ValidationError, match="hog, cnn, hog\\+cnn"):
        Settings()
    monkeypatch.delenv("SIAMID_DETECTOR")
    assert Settings().detector == DEFAULT_DETECTION in DETECTION_METHODS


@pytest.mark.att
def test_import_with_each_detector_redetects_incrementally(
    tmp_path: Path, siamid_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    att = need_dir(ATT)
    root = tmp_path / "gallery"
    for subject in ("s1", "s2"):
        (root / subject).mkdir(parents=True)
        for i in (1, 2):
            (root / subject / f"{i}.pgm").write_bytes((att / subject / f"{i}.pgm").read_bytes())
    monkeypatch.setenv("SIAMID_DETECTOR", "hog")  # use_detector overrides it per command
    runner = CliRunner()
    first = runner.invoke(app, ["gallery", "import", str(root), "--detector", "cnn", "--json"])
    assert first.exit_code == 0, first.output
    faces = json.loads(first.output.strip().splitlines()[-1])["faces"]
    assert faces["detector"] == "dlib-mmod+sp5" and faces["detected"] == 4
    assert faces["outcomes"] == {"ok": 4}
    again = runner.invoke(app, ["gallery", "import", str(root), "--detector", "hog", "--json"])
    assert again.exit_code == 0, again.output
    faces = json.loads(again.output.strip().splitlines()[-1])["faces"]
    assert faces["detector"] == "dlib-hog+sp5" and faces["detected"] == 4  # a new version
    with sqlite3.connect(siamid_home / "siamid.db") as db:
        rows = db.execute("select detector, count(*) from face_detection group by 1").fetchall()
    assert sorted(rows) == [("dlib-hog+sp5", 4), ("dlib-mmod+sp5", 4)]
