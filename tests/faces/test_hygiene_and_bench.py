"""faces/ stays a ground floor; bench/bench_detect.py runs end to end on a tiny ImageFolder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.faces.synth import att_face, background, need_dir, paste

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("siamese", "index", "storage", "pipelines", "prefect", "torch", "sqlalchemy", "faiss")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    return set(out.stdout.split())


def test_faces_imports_no_sibling_or_heavy_package() -> None:
    loaded = _imported_after(
        "import faces, faces.face, faces.image, faces.warp, faces.align, faces.detect"
    )
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


def test_reading_face_records_does_not_load_dlib() -> None:
    loaded = _imported_after("import faces\nfrom faces import Face, MIN_EYE_SPAN, is_too_small")
    assert "dlib" not in loaded
    assert "dlib" in _imported_after("from faces import Detector")


def test_bench_detect_smoke(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    for person, (subject, seed) in enumerate([(4, 1), (8, 2), (15, 3)]):
        folder = data / f"{person:04d}"
        folder.mkdir(parents=True)
        scene = background(400, 300, seed=seed)
        paste(scene, att_face(subject, 1), 120, 40, 1.8)
        Image.fromarray(scene).save(folder / "a.jpg", quality=95)
        Image.fromarray(background(120, 160, seed=10 + seed)).save(folder / "b.jpg", quality=95)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import bench_detect

    out = tmp_path / "result.json"
    record = bench_detect.main(["--data", str(data), "--out", str(out), "--smoke"])
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == "bench_detect" and saved["photos"] == 6
    assert saved["photos_by_faces"] == {"none": 3, "one": 3, "several": 0, "found_by_cnn": 0}
    assert saved["speed"]["photos_the_cnn_ran_on"] == 3  # the empty scenes
    assert "mmod" in saved["detector"]["name"]
    assert saved["faces"]["total"] == 3 and saved["faces"]["below_min_eye_span"] == 0
    assert saved["speed"]["p50_ms"] > 0 and saved["speed"]["images_per_s"] > 0
    assert saved["hardware"]["cpu_model"] and saved["hardware"]["threads"] == 1
    assert saved["chip_parity"]["chips"] == 2 and saved["chip_parity"]["mean_abs_diff"] < 0.01
    assert record["detector"]["version"] == saved["detector"]["version"]


def test_missing_data_skips_locally_and_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = tmp_path / "no-such-dataset"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        need_dir(absent)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        need_dir(absent)
    assert need_dir(tmp_path) == tmp_path
