"""The rendered report opened in a real browser (headless Chromium, Debian's package): every plot
image loads and the figures table is there.

Locally the test skips when Chromium is absent; under CI=true that is a failure, since .ci/run
installs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.services.report import ReportData, write_report
from tests.support import chromium


@pytest.mark.parametrize("embed", [True, False])
def test_report_plots_load_in_chromium(tmp_path: Path, embed: bool) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    rng = np.random.default_rng(0)
    data = ReportData(
        genuine=rng.normal(0.4, 0.1, 300),
        impostor=rng.normal(1.0, 0.2, 3000),
        mated_dist=rng.normal(0.4, 0.1, 120),
        mated_rank=rng.integers(1, 4, 120).astype(float),
        nonmated_best=rng.normal(0.9, 0.15, 200),
        mated_ids=[f"p{i % 12}" for i in range(120)],
        folds=[{"rank1": 0.9, "eer": 0.05}, {"rank1": 0.8, "eer": 0.07}],
    )
    report = write_report(tmp_path / "report", {"model": "m1"}, data, embed=embed)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])"
            )
            rows = page.eval_on_selector_all("#figures tr", "els => els.length")
            header = page.inner_text("#figures tr")
            rank1 = page.inner_text("#figures")
        finally:
            browser.close()
    assert len(images) == 5, images
    assert all(ok for _, ok in images), f"plots that did not load: {images}"
    assert rows > 10 and "Folds" in header
    assert "Rank-1 identification rate" in rank1
