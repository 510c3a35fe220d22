"""Open-set identification: candidates per identity, thresholds, calibration, bad probes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.services.calibration import CalibrationError, calibrate
from pipelines.services.identification import Identifier
from pipelines.services.indexing import index_pending
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import group_by_identity, margin_threshold
from siamese.synthetic import generate_gallery


def test_group_by_identity_keeps_best_per_person_and_skips_removed() -> None:
    d = np.array([0.1, 0.2, 0.15, 0.3, np.inf], dtype=np.float32)
    ids = np.array([10, 11, 20, 99, -1])
    owner = {10: 1, 11: 1, 20: 2}  # 99 was removed since the last embed
    got = group_by_identity(d, ids, owner, top_k=5)
    assert [(g, round(x, 3), f) for g, x, f in got] == [(1, 0.1, 10), (2, 0.15, 20)]
    assert group_by_identity(d, ids, owner, top_k=1)[0][0] == 1


def test_margin_threshold_is_half_the_margin() -> None:
    assert margin_threshold(1.0) == 0.5


@pytest.fixture
def served(rt: Runtime, model: str) -> str:
    index_pending(rt, model)
    return model


def test_identify_enrolled_unknown_and_unreadable(
    rt: Runtime, served: str, imported: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    enrolled = imported / "person_0002" / "000.png"
    decisions = Identifier(rt, threshold=1e-3, top_k=3).identify([enrolled, bad])
    assert decisions[0].decision == "match" and decisions[0].identity == "person_0002"
    assert decisions[0].distance is not None and decisions[0].distance < 1e-3
    assert len(decisions[0].candidates) == 3
    assert decisions[1].decision == "error" and "not_an_image" in (decisions[1].error or "")
    strict = Identifier(rt, threshold=-1.0).identify([enrolled])[0]
    assert strict.decision == "unknown" and strict.identity is None


def test_calibrate_stores_threshold_used_by_identify(
    rt: Runtime, served: str, tmp_path: Path
) -> None:
    visitors = tmp_path / "visitors"
    generate_gallery(visitors, identities=5, per_identity=4, seed=3, first_identity=500)
    res = calibrate(rt, visitors, 0.1)
    assert res.nonmated_searches == 20 and res.realised_fpir <= 0.1
    ident = Identifier(rt)
    assert ident.threshold == pytest.approx(res.threshold)
    assert ident.threshold_source.startswith("calibrated")
    # The stored threshold lets at most 10% of the calibration visitors through.
    decisions = ident.identify(sorted(visitors.rglob("*.png")))
    assert sum(d.decision == "match" for d in decisions) <= 2


def test_a_grown_gallery_gets_its_threshold_set_again_at_publish(
    rt: Runtime, served: str, tmp_path: Path
) -> None:
    """Calibrated with 8 people enrolled; 24 more are enrolled and published: the embed step
    runs the calibration's kept searches again against the 32, pooled with the gallery's own
    people searched against each other, and identify uses that threshold, for 32 people."""
    from pipelines.services.gallery import import_items, scan_image_folder
    from pipelines.services.scoring import gallery_self_search, threshold_for_searches
    from storage.calibration import latest_calibration

    visitors, more = tmp_path / "visitors", tmp_path / "more"
    generate_gallery(visitors, identities=5, per_identity=4, seed=3, first_identity=500)
    generate_gallery(more, identities=24, per_identity=2, seed=5, first_identity=700)
    res = calibrate(rt, visitors, 0.1)
    assert Identifier(rt).threshold_gallery == 8
    import_items(scan_image_folder(more), sessions=rt.sessions)
    index_pending(rt, served)

    ident = Identifier(rt)
    assert ident.threshold_gallery == 32 and ident.threshold_source.endswith("searched again")
    with rt.sessions() as s:
        cal = latest_calibration(session=s, model_version_id=ident.model.id)
        assert cal is not None and cal.id == res.calibration
        again = cal.details["for_gallery"]
    assert again["identities"] == 32 and again["threshold"] == ident.threshold
    assert (again["calibration_searches"], again["gallery_searches"]) == (20, 32 + 48)
    # the same threshold from the services' rule on the same searches
    from pipelines.services.calibration import LiveGallery

    gallery = LiveGallery.load(ident)
    searches = np.load(rt.settings.home_dir / "calibrations" / cal.details["searches_file"])
    own = np.searchsorted(gallery.starts, np.arange(len(gallery.vectors)), side="right") - 1
    expected = threshold_for_searches(
        0.1,
        gallery.distances(searches).min(axis=1),
        gallery_self_search(gallery.distances(gallery.vectors), own),
    )
    assert ident.threshold == pytest.approx(expected)

    # one more person (33, within SEARCH_AGAIN_GROWTH of 32): nothing is searched again
    one = tmp_path / "one"
    generate_gallery(one, identities=1, per_identity=2, seed=6, first_identity=900)
    import_items(scan_image_folder(one), sessions=rt.sessions)
    index_pending(rt, served)
    later = Identifier(rt)
    assert (later.threshold, later.threshold_gallery) == (ident.threshold, 32)


def test_calibrate_refuses_enrolled_people(rt: Runtime, served: str, imported: Path) -> None:
    with pytest.raises(CalibrationError, match="NOT enrolled"):
        calibrate(rt, imported, 0.01)


def test_calibrate_pools_several_folders(
    rt: Runtime, served: str, imported: Path, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate_gallery(a, identities=3, per_identity=4, seed=3, first_identity=500)
    generate_gallery(b, identities=2, per_identity=5, seed=4, first_identity=600)
    res = calibrate(rt, [a, b], 0.1)
    assert res.nonmated_searches == 22
    with pytest.raises(CalibrationError, match="NOT enrolled"):
        calibrate(rt, [a, imported], 0.1)  # one enrolled person anywhere is refused
    result = CliRunner().invoke(
        app, ["calibrate", "--data", str(a), "--data", str(b), "--target-fpir", "0.1", "--json"]
    )
    assert result.exit_code == 0, result.output
    row = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert row["nonmated_searches"] == 22


def test_cli_identify_json_lines_and_parquet(served: str, imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    result = CliRunner().invoke(
        app,
        ["identify", str(imported / "person_0003"), "--json", "--top-k", "2", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 4
    for row in rows:
        assert {
            "probe",
            "decision",
            "identity",
            "distance",
            "threshold",
            "model_version",
            "index_version",
            "candidates",
        } <= row.keys()
        assert row["decision"] in ("match", "unknown") and len(row["candidates"]) == 2
    import pandas as pd

    assert len(pd.read_parquet(out)) == 4


def test_mean_templates_are_read_once_per_loaded_index(
    rt: Runtime, served: str, imported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mean template of a candidate comes from SQL and the vector store the first time only:
    later searches of the same index version answer from memory (the query path's hot path)."""
    import storage.embeddings

    ident = Identifier(rt, template="mean", top_k=3)
    probe = imported / "person_0002" / "000.png"
    first = ident.identify([probe])[0]
    assert first.candidates[0].identity == "person_0002"

    def no_sql(**kwargs: object) -> None:
        raise AssertionError("mean templates read again")

    monkeypatch.setattr(storage.embeddings, "identity_vector_refs", no_sql)
    again = ident.identify([probe])[0]
    assert [(c.identity, c.distance) for c in again.candidates] == [
        (c.identity, c.distance) for c in first.candidates
    ]


def test_mean_template_distances_are_each_candidates_own(rt: Runtime, served: str) -> None:
    """Rescoring by mean template: every candidate's distance is the probe's distance to that
    identity's mean template, best first, for each probe of a batch on its own."""
    from siamese.distances import pairwise_distances

    ident = Identifier(rt, template="mean", top_k=3)
    warm = ident.search(np.zeros((1, ident.model.dim), np.float32) + 0.1)
    means = ident.means.get([c.identity_id for c in warm[0]])
    probes = np.stack([means[g] for g in sorted(means)[:2]]).astype(np.float32)
    for probe, row in zip(probes, ident.search(probes), strict=True):
        assert [c.distance for c in row] == sorted(c.distance for c in row)
        for c in row:
            mean = ident.means.get([c.identity_id])[c.identity_id]
            expected = pairwise_distances(probe[None], mean[None], ident.model.distance)
            assert c.distance == pytest.approx(float(expected[0, 0]), abs=1e-9)
        assert row[0].distance == pytest.approx(0.0, abs=1e-5)


def test_mean_templates_loaded_at_once_are_the_ones_read_one_by_one(
    rt: Runtime, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service loads every identity's mean template with the version: the same templates
    the search would read identity by identity, and no search reads SQL for them after."""
    import storage.embeddings

    lazy = Identifier(rt, template="mean")
    bulk = Identifier(rt, template="mean")
    assert bulk.load_mean_templates() == len(bulk.owners.identity_ids) > 1
    one_by_one = lazy.means.get(sorted(bulk.means.cached))
    assert sorted(one_by_one) == sorted(bulk.means.cached)
    for g, mean in one_by_one.items():
        np.testing.assert_allclose(bulk.means.cached[g], mean, rtol=0, atol=1e-6)

    def no_sql(**kwargs: object) -> None:
        raise AssertionError("mean templates read again")

    monkeypatch.setattr(storage.embeddings, "identity_vector_refs", no_sql)
    probes = np.stack(list(one_by_one.values()))
    assert [row[0].identity_id for row in bulk.search(probes)] == list(one_by_one)
    assert Identifier(rt, template="best").load_mean_templates() == 0


def test_a_new_version_keeps_the_templates_of_identities_that_did_not_change(
    rt: Runtime, served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one more person is enrolled and published, the next version's templates are the
    previous version's for everyone else (the same arrays, no bulk read) and are read for the
    newcomer only; they equal the templates read one by one."""
    import storage.embeddings
    from pipelines.services.gallery import import_items, scan_image_folder

    before = Identifier(rt, template="mean")
    before.load_mean_templates()
    newcomer = tmp_path / "newcomer"
    generate_gallery(newcomer, identities=1, per_identity=3, seed=9, first_identity=900)
    import_items(scan_image_folder(newcomer), sessions=rt.sessions)
    index_pending(rt, served)

    after = Identifier(rt, template="mean")
    assert after.index_version_id != before.index_version_id

    def no_bulk(**kwargs: object) -> None:
        raise AssertionError("every template read again")

    monkeypatch.setattr(storage.embeddings, "live_embeddings", no_bulk)
    everyone = after.owners.identity_ids.tolist()
    assert (
        after.load_mean_templates(previous=before) == len(everyone) == len(before.means.cached) + 1
    )
    (new,) = set(everyone) - set(before.means.cached)
    assert all(after.means.cached[g] is before.means.cached[g] for g in everyone if g != new)
    monkeypatch.undo()
    fresh = Identifier(rt, template="mean").means.get(everyone)
    for g in everyone:
        np.testing.assert_allclose(after.means.cached[g], fresh[g], rtol=0, atol=1e-6)


def test_a_gallery_is_compared_a_few_rows_at_a_time(rt: Runtime, served: str) -> None:
    """Searches against the whole gallery (calibration's tail, a threshold set again at
    publish) go a few rows at a time, so memory stays bounded at any gallery size, and give
    what the whole matrix gives."""
    from pipelines.services.calibration import LiveGallery
    from pipelines.services.scoring import false_match_tail, gallery_self_search

    for template in ("best", "mean"):
        gallery = LiveGallery.load(Identifier(rt, threshold=0.0, top_k=1, template=template))
        budget = 3 * len(gallery.compared)  # three rows a chunk
        full = gallery.distances(gallery.vectors)
        chunks = list(gallery.distance_chunks(gallery.vectors, budget))
        assert len(chunks) > 1 and np.array_equal(np.concatenate(chunks), full)
        own = np.searchsorted(gallery.starts, np.arange(len(gallery.vectors)), side="right") - 1
        np.testing.assert_array_equal(
            gallery.nearest(gallery.vectors, own, budget), gallery_self_search(full, own)
        )
        np.testing.assert_array_equal(gallery.nearest(gallery.vectors, None, budget), full.min(1))
        assert false_match_tail(iter(chunks), keep=7) == false_match_tail(full, keep=7)
