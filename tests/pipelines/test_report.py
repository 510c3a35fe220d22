"""The HTML evaluation report: files, embedded plots, figures and tables."""

from __future__ import annotations

import ast
import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pipelines.services import report as report_module
from pipelines.services.report import ReportData, summary_figures, write_report
from siamese import openset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}


class _TagChecker(HTMLParser):
    """Collects tags and fails on unbalanced non-void elements."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[str] = []
        self.errors: list[str] = []
        self.img_src: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append(tag)
        if tag == "img":
            self.img_src.append(dict(attrs).get("src") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()


def _parse(text: str) -> _TagChecker:
    checker = _TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    return checker


def _data(**overrides: object) -> ReportData:
    rng = np.random.default_rng(0)
    n_mated, n_nonmated = 60, 50
    rank = np.where(rng.random(n_mated) < 0.8, 1.0, rng.integers(2, 8, n_mated).astype(float))
    rank[:3] = np.inf
    mated = rng.normal(0.5, 0.15, n_mated).clip(0.0)
    mated[:3] = np.inf
    kwargs: dict[str, object] = {
        "genuine": rng.normal(0.5, 0.15, 200).clip(0.0),
        "impostor": rng.normal(1.2, 0.2, 600).clip(0.0),
        "mated_dist": mated,
        "mated_rank": rank,
        "nonmated_best": rng.normal(1.0, 0.2, n_nonmated).clip(0.0),
        "target_fpir": 0.1,
        "mated_ids": [f"person_{i % 12:04d}" for i in range(n_mated)],
        "nonmated_best_ids": [f"person_{i % 7:04d}" for i in range(n_nonmated)],
        "folds": [{"rank1": 0.8, "eer": 0.05}, {"rank1": 0.9, "eer": 0.07}],
    }
    kwargs.update(overrides)
    return ReportData(**kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report")
    metrics = {"model": "chopra", "train": {"epochs": 3}, "rank1": 0.875}
    path = write_report(out / "run1", metrics, _data(), top_n=5)
    return path, path.read_text(encoding="utf-8")


def test_report_file_and_plots(written: tuple[Path, str]) -> None:
    path, text = written
    assert path.name == "report.html" and path.is_file()
    for name in ("det", "dir_fpir", "cmc", "pair_distances", "search_distances"):
        png = path.parent / f"{name}.png"
        assert png.read_bytes().startswith(PNG_MAGIC)
        assert f'id="{name}"' in text
    for heading in ("DET curve", "DIR vs FPIR", "CMC", "Genuine / impostor distances"):
        assert heading in text
    assert text.count("<img") == 5


def test_report_is_wellformed_and_self_contained(written: tuple[Path, str]) -> None:
    _, text = written
    assert text.startswith("<!DOCTYPE html>")
    checker = _parse(text)
    assert {"html", "head", "body", "table", "figure"} <= set(checker.seen)
    assert len(checker.img_src) == 5
    for src in checker.img_src:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_figures_table(written: tuple[Path, str]) -> None:
    _, text = written
    for key in (
        "rank1",
        "dir@fpir=0.1%",
        "dir@fpir=1%",
        "dir@fpir=10%",
        "eer",
        "tar@far=0.1%",
        "tar@far=1%",
        "threshold",
        "target_fpir",
        "fpir",
        "fnir",
    ):
        assert f"<code>{key}</code>" in text
    # The caller's rank1 overrides the computed one; folds give mean ± sample std.
    assert "87.50%" in text
    assert "85.00% ± 7.07% (n=2)" in text
    # 50 non-mated searches cannot resolve FPIR 0.1% or 1%: flagged with a dagger.
    assert "DIR (rank 1) at FPIR 0.1% †" in text
    assert "DIR (rank 1) at FPIR 10% †" not in text
    # Non-figure metrics go to the run details, nested keys flattened.
    assert "<code>model</code>" in text and "<code>train.epochs</code>" in text


def test_per_identity_table(written: tuple[Path, str]) -> None:
    _, text = written
    table = text.split('id="per-identity"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 1 + 5  # header + top_n rows
    assert "person_00" in table
    assert "Top 5 of 12 identities" in text


def test_summary_figures_match_openset() -> None:
    data = _data()
    figures = summary_figures(data)
    assert figures["rank1"] == openset.rank1(data.mated_rank)
    thr = openset.threshold_at_fpir(0.1, data.nonmated_best)
    assert figures["threshold"] == thr == data.threshold
    assert figures["fpir"] == openset.fpir_at(thr, data.nonmated_best) <= 0.1
    assert figures["dir"] == pytest.approx(1 - figures["fnir"])
    assert figures["dir@fpir=10%"] == pytest.approx(figures["dir"])
    assert figures["eer"] == openset.eer(data.genuine, data.impostor)[0]
    assert figures["n_mated"] == 60 and figures["n_nonmated"] == 50


def test_report_without_verification_or_nonmated(tmp_path: Path) -> None:
    data = _data(
        genuine=[],
        impostor=[],
        nonmated_best=[],
        nonmated_best_ids=None,
        threshold=0.6,
        target_fpir=None,
    )
    path = write_report(tmp_path, {}, data, embed=False)
    text = path.read_text(encoding="utf-8")
    checker = _parse(text)
    assert text.count("Not available") == 3  # DET, DIR vs FPIR, pair histogram
    assert sorted(checker.img_src) == ["cmc.png", "search_distances.png"]
    assert (tmp_path / "cmc.png").is_file() and not (tmp_path / "det.png").exists()
    assert "<code>eer</code>" not in text and "<code>rank1</code>" in text


def test_report_data_validation() -> None:
    with pytest.raises(ValueError, match="mated"):
        _data(mated_dist=[], mated_rank=[])
    with pytest.raises(ValueError, match="one entry per mated search"):
        _data(mated_rank=[1.0, 2.0])
    with pytest.raises(ValueError, match="genuine and impostor"):
        _data(impostor=[])
    with pytest.raises(ValueError, match="1-D"):
        _data(genuine=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="top_n"):
        write_report(Path("/nonexistent"), {}, _data(), top_n=0)


def test_report_module_does_not_import_prefect() -> None:
    tree = ast.parse(Path(report_module.__file__).read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    assert not {m for m in modules if re.match(r"(prefect|sqlalchemy|faiss)\b", m)}
