"""The Prefect flows end to end under a temporary Prefect API, and the train command's refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from pipelines.services.runtime import Runtime
from siamese.synthetic import generate_gallery
from storage.models import EvaluationRun, ModelVersion


def _siamid(*args: str, env_home: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "SIAMID_HOME": str(env_home), "SIAMID_TORCH_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("empty", ["train", "--data", "{data}"], "no accepted images"),
        ("single", ["train", "--data", "{data}"], "single image"),
        ("ok", ["train", "--data", "{data}", "--distance", "manhattan"], "manhattan"),
        ("ok", ["train", "--data", "{data}", "--arch", "two-channel", "--loss", "hadsell"], "bce"),
    ],
)
def test_train_refuses_bad_data_and_options_before_training(
    tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if setup == "single":
        generate_gallery(data, identities=6, per_identity=1, seed=0)
    elif setup == "ok":
        generate_gallery(data, identities=6, per_identity=2, seed=0)
    result = _siamid(*[a.format(data=data) for a in args], env_home=tmp_path / "home")
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "epoch" not in result.stdout  # refused before any training


@pytest.mark.slow
def test_train_embed_evaluate_flows(prefect_harness: None, rt: Runtime, tmp_path: Path) -> None:
    from pipelines.flows.embed import embed_flow
    from pipelines.flows.evaluate import evaluate_flow
    from pipelines.flows.train import train_flow
    from pipelines.services.evaluation import Protocol
    from pipelines.services.training import TrainOptions

    data = tmp_path / "faces"
    generate_gallery(data, identities=12, per_identity=4, seed=1)
    trained = train_flow(data=str(data), options=TrainOptions(epochs=2, seed=0))
    assert trained.validation.eer is not None
    assert set(trained.validation.val_identities).isdisjoint(trained.validation.train_identities)
    with rt.sessions() as s:
        mv = s.scalars(select(ModelVersion)).one()
        assert mv.name == trained.name and len(mv.checkpoint_sha256) == 64
        assert mv.metrics["validation"]["eer"] == trained.validation.eer

    embedded = embed_flow(batch_size=16, chunk_size=20)
    assert embedded.embedded == 48 and embedded.vectors == 48
    assert embedded.published and embedded.index_version >= 1
    again = embed_flow()
    assert (again.embedded, again.skipped, again.published) == (0, 48, False)

    report = tmp_path / "report"
    out = evaluate_flow(
        Protocol(data=str(data), folds=2, epochs=1, enroll=2, seed=0, members=2), str(report)
    )
    metrics = json.loads((report / "metrics.json").read_text())
    for key in (
        "rank1",
        "dir_at_fpir",
        "eer",
        "threshold",
        "target_fpir",
        "realised_fpir",
        "realised_fnir",
    ):
        assert key in metrics
    assert set(metrics["dir_at_fpir"]) == {"0.001", "0.01", "0.1"}
    assert len(metrics["folds"]) == 2
    for f in metrics["folds"]:  # identity-disjoint: nobody trains and is evaluated
        assert f["people"]["train"] == 6
    html = (report / "report.html").read_text()
    assert "<img" in html and "DET" in html
    assert (report / "probes.parquet").is_file() and (report / "probes.csv").is_file()
    with rt.sessions() as s:
        fold_models = s.scalars(select(ModelVersion).where(ModelVersion.name.like("eval-%"))).all()
        assert len(fold_models) == 2 and {m.embedding_dim for m in fold_models} == {128}
        run = s.get_one(EvaluationRun, out["evaluation_run"])
        assert run.report_path == str(report / "report.html")
        assert run.metrics["rank1"] == metrics["rank1"]


def test_serve_builds_a_cron_deployment_and_needs_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.schedule import NoPrefectServerError, embed_deployment, serve_embed
    from pipelines.services.errors import SiamidError

    dep = embed_deployment(cron="0 3 * * *", name="nightly")
    assert dep.name == "nightly" and dep.schedules[0].schedule.cron == "0 3 * * *"
    with pytest.raises(SiamidError, match="cron"):
        embed_deployment(cron="not a cron", name="x")
    monkeypatch.setattr("pipelines.schedule.prefect_api_url", lambda: None)
    with pytest.raises(NoPrefectServerError, match="prefect server start"):
        serve_embed(cron="0 3 * * *", name="x")


@pytest.mark.slow
def test_demo_runs_the_whole_chain(prefect_harness: None, rt: Runtime) -> None:
    from pipelines.demo import run_demo, summary_table

    result = run_demo(rt, None, seed=0, epochs=1, folds=1, members=1)
    assert result.imported.new == 280 and result.embedded.vectors == 280
    assert result.calibrated.nonmated_searches == 400
    ident = result.identified
    assert (ident.enrolled, ident.unknown) == (20, 20)  # 20 held-out images + 10 visitors x 2
    assert ident.enrolled_correct + ident.enrolled_wrong_person + ident.enrolled_rejected == 20
    assert Path(result.report).is_file()
    table = summary_table(result)
    assert "enrolled visitors" in table and result.report in table
    json.dumps(result.as_dict())
