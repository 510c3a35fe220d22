"""The embed and detect flows on a real Dask cluster (worker processes, not threads, not mocks).

One ``LocalCluster`` of two single-thread worker processes serves the module (starting one
and warming its workers costs more than most tests here). Each test points the workers at its
own ``SIAMID_HOME``; workers that the nanny restarts after a kill inherit it from this process.
Faults are injected inside the worker processes with ``client.run``: a worker is SIGKILLed in
the middle of a chunk, slowed down, or set up for another home.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import dask.config
import distributed
import numpy as np
import pytest
from sqlalchemy import func, select

from pipelines.cluster import WORKER_CONFIG, ClusterError, ClusterSpec, flow_on
from pipelines.flows.detect import detect_flow
from pipelines.flows.embed import embed_flow
from pipelines.services import doctor
from pipelines.services.indexing import index_pending
from pipelines.services.models import resolve_model
from pipelines.services.runtime import Runtime
from pipelines.services.worker import RunTarget, WorkerSetupError, worker_runtime
from pipelines.settings import Settings
from storage.models import Embedding

# helpers below run inside the worker processes, which cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WORKERS = 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with (
        dask.config.set(WORKER_CONFIG),
        distributed.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as c,
    ):
        yield c


@pytest.fixture
def client(cluster: distributed.LocalCluster, siamid_home: Path) -> Iterator[distributed.Client]:
    with distributed.Client(cluster) as client:
        client.wait_for_workers(WORKERS, timeout=120)
        client.run(_set_env, {"SIAMID_HOME": str(siamid_home), "SIAMID_DATABASE_URL": None})
        yield client


def _set_env(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _embed_on(cluster: distributed.LocalCluster, **kwargs: object):  # type: ignore[no-untyped-def]
    with flow_on(embed_flow, ClusterSpec(address=cluster.scheduler_address)) as run:
        return run(**kwargs)


def _vectors(rt: Runtime, model: str) -> dict[int, np.ndarray]:
    from index.vector_store import VectorStore
    from storage.embeddings import live_embeddings

    ref = resolve_model(rt.sessions, model)
    with rt.sessions() as s:
        live = live_embeddings(session=s, model_version_id=ref.id)
    store = VectorStore(rt.settings.vector_store_dir(ref.id), ref.dim)
    vectors = store.read([r for _, r in live])
    return {fid: vectors[i] for i, (fid, _) in enumerate(live)}


def _rows(rt: Runtime) -> tuple[int, int]:
    with rt.sessions() as s:
        total = s.scalar(select(func.count()).select_from(Embedding))
        distinct = s.scalar(select(func.count(func.distinct(Embedding.face_image_id))))
    return int(total or 0), int(distinct or 0)


# ------------------------------------------------------------------ run inside the workers


def _count_model_loads() -> None:
    import pipelines.services.models as models

    original = models.load_encoder
    models.LOADS = 0  # type: ignore[attr-defined]

    def counting(model):  # type: ignore[no-untyped-def]
        models.LOADS += 1  # type: ignore[attr-defined]
        return original(model)

    models.load_encoder = counting


def _model_loads() -> int:
    import pipelines.services.models as models

    return int(getattr(models, "LOADS", -1))


def _kill_in_chunk(after_commit: bool) -> None:
    """SIGKILL this worker in its next chunk: before its SQL rows commit (after the shard is
    written), or after they commit (its result never reaches the flow)."""
    import signal

    import pipelines.services.embedding as embedding
    import storage.embeddings as rows

    def die(*args, **kwargs):  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGKILL)

    if after_commit:
        original = embedding.embed_chunk

        def commit_then_die(*args, **kwargs):  # type: ignore[no-untyped-def]
            original(*args, **kwargs)
            die()

        embedding.embed_chunk = commit_then_die
    else:
        rows.add_embeddings = die


def _slow_chunks(seconds: float) -> None:
    import pipelines.services.embedding as embedding

    original = getattr(embedding, "_unslowed", embedding.embed_chunk)
    embedding._unslowed = original  # type: ignore[attr-defined]

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        return original(*args, **kwargs)

    embedding.embed_chunk = slow if seconds else original


def _executed(dask_worker) -> int:  # type: ignore[no-untyped-def]
    return int(dask_worker.state.executed_count)


# ------------------------------------------------------------------ tests


@pytest.mark.slow
def test_cluster_embeds_the_vectors_one_process_embeds(
    prefect_harness: None,
    rt: Runtime,
    model: str,
    client: distributed.Client,
    cluster: distributed.LocalCluster,
) -> None:
    index_pending(rt, model, batch_size=4, chunk_size=4)
    alone = _vectors(rt, model)
    client.run(_count_model_loads)
    before = client.run(_executed)

    out = _embed_on(cluster, model=model, full=True, batch_size=4, chunk_size=4)
    assert (out.embedded, out.failed, out.failed_chunks, out.vectors) == (32, 0, [], 32)
    spread = client.run(_executed)
    assert all(spread[w] > before[w] for w in spread), "both workers took chunks"
    # The model is loaded once per worker process, however many chunks it embeds.
    assert sorted(client.run(_model_loads).values()) == [1] * WORKERS

    on_cluster = _vectors(rt, model)
    assert on_cluster.keys() == alone.keys() and len(alone) == 32
    gap = max(float(np.abs(on_cluster[k] - alone[k]).max()) for k in alone)
    assert gap <= 1e-6, gap
    assert _rows(rt) == (32, 32)
    assert doctor.diagnose(rt).ok


@pytest.mark.slow
def test_worker_killed_mid_chunk_is_rescheduled_with_no_duplicate_or_missing_vector(
    prefect_harness: None,
    rt: Runtime,
    model: str,
    client: distributed.Client,
    cluster: distributed.LocalCluster,
) -> None:
    first, second = sorted(client.scheduler_info()["workers"])
    pids = client.run(os.getpid)
    client.run(_kill_in_chunk, False, workers=[first])  # shard written, rows not committed
    client.run(_kill_in_chunk, True, workers=[second])  # rows committed, result lost

    out = _embed_on(cluster, model=model, batch_size=4, chunk_size=4)

    client.wait_for_workers(WORKERS, timeout=120)
    assert not set(client.run(os.getpid).values()) & set(pids.values()), "both were killed"
    assert (out.embedded, out.failed_chunks, out.vectors) == (32, [], 32)
    assert _rows(rt) == (32, 32)
    report = doctor.diagnose(rt)
    assert report.ok, report.problems


@pytest.mark.slow
def test_worker_started_after_the_run_began_picks_up_work(
    prefect_harness: None,
    rt: Runtime,
    model: str,
    client: distributed.Client,
    cluster: distributed.LocalCluster,
) -> None:
    cluster.scale(1)
    while len(client.scheduler_info()["workers"]) != 1:
        time.sleep(0.1)
    (old,) = client.scheduler_info()["workers"]
    client.run(_slow_chunks, 1.0)  # 8 chunks of 1 s on the one worker: time for another

    def add_a_worker_once_a_chunk_runs() -> None:
        while not any(client.processing().values()):
            time.sleep(0.05)
        cluster.scale(2)

    joiner = threading.Thread(target=add_a_worker_once_a_chunk_runs, daemon=True)
    joiner.start()
    try:
        out = _embed_on(cluster, model=model, batch_size=4, chunk_size=4)
    finally:
        joiner.join(timeout=120)
        client.run(_slow_chunks, 0.0, workers=[old])
    assert (out.embedded, out.failed_chunks, out.vectors) == (32, [], 32)
    executed = client.run(_executed)
    assert set(executed) - {old}, "a second worker joined"
    assert all(executed[w] > 0 for w in executed if w != old), executed
    assert _rows(rt) == (32, 32) and doctor.diagnose(rt).ok


@pytest.mark.slow
def test_workers_set_up_for_another_home_fail_their_chunks_not_the_run(
    prefect_harness: None,
    rt: Runtime,
    model: str,
    client: distributed.Client,
    cluster: distributed.LocalCluster,
    siamid_home: Path,
    tmp_path: Path,
) -> None:
    client.run(_set_env, {"SIAMID_HOME": str(tmp_path / "elsewhere")})
    out = _embed_on(cluster, model=model, batch_size=16, chunk_size=16)
    assert out.embedded == 0 and [c["chunk"] for c in out.failed_chunks] == [1, 2]
    for c in out.failed_chunks:
        assert c["images"] == 16
        assert "SIAMID_HOME" in str(c["reason"]) and str(siamid_home) in str(c["reason"])

    client.run(_set_env, {"SIAMID_HOME": str(siamid_home)})
    again = _embed_on(cluster, model=model, batch_size=16, chunk_size=16)
    assert (again.embedded, again.failed_chunks, again.vectors) == (32, [], 32)
    assert doctor.diagnose(rt).ok


@pytest.mark.slow
def test_detect_flow_on_the_cluster_stores_what_one_process_finds(
    prefect_harness: None,
    rt: Runtime,
    imported: Path,
    client: distributed.Client,
    cluster: distributed.LocalCluster,
) -> None:
    from pipelines.services.detection import detect_paths, detector
    from storage.faces import detections_of

    with flow_on(detect_flow, ClusterSpec(address=cluster.scheduler_address)) as run:
        out = run(chunk_size=5)
    assert out.detected == 32 and out.failed_chunks == [] and sum(out.outcomes.values()) == 32

    det = detector()
    with rt.sessions() as s:
        ids = {str(p): i for i, p, _ in _images(rt)}
        stored = detections_of(
            session=s,
            face_image_ids=list(ids.values()),
            detector=det.name,
            detector_version=det.version,
        )
    here = detect_paths(list(ids), rt.limits)
    for (path, image_id), found in zip(ids.items(), here, strict=True):
        got = stored[image_id]
        assert got.outcome == found.outcome, path
        assert [f.box for f in got.faces] == [tuple(map(float, f.box)) for f in found.faces]

    again = detect_flow.with_options()  # in-process now: nothing left to detect
    assert again(chunk_size=5).detected == 0


def _images(rt: Runtime) -> list[tuple[int, str, str]]:
    from storage.models import FaceImage

    with rt.sessions() as s:
        rows = s.execute(select(FaceImage.id, FaceImage.source_uri, FaceImage.sha256)).all()
    return [(int(i), str(u), str(h)) for i, u, h in rows]


# ------------------------------------------------------------------ no cluster needed


def test_a_worker_that_cannot_open_the_database_says_so(
    siamid_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/siamid"
    monkeypatch.setenv("SIAMID_DATABASE_URL", url)
    target = RunTarget.of(Settings())
    with pytest.raises(WorkerSetupError, match=r"worker pid \d+ on .*cannot use the database"):
        worker_runtime(target)
    monkeypatch.delenv("SIAMID_DATABASE_URL")
    with pytest.raises(WorkerSetupError, match="start the worker with the run's SIAMID_DATABASE"):
        worker_runtime(target)


def test_a_worker_detects_with_the_runs_detector(
    siamid_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote worker started with another SIAMID_DETECTOR detects with the run's."""
    from pipelines.services.detection import detection_method

    monkeypatch.setenv("SIAMID_DETECTOR", "cnn")  # the run's --detector
    target = RunTarget.of(Settings())
    assert target.detector == "cnn"
    monkeypatch.setenv("SIAMID_DETECTOR", "hog")  # the worker's own
    worker_runtime(target)
    assert detection_method() == "cnn"


def test_cluster_options() -> None:
    assert ClusterSpec.from_options(None, None) is None
    with pytest.raises(ClusterError, match="not both"):
        ClusterSpec.from_options("tcp://127.0.0.1:8786", 2)
    with pytest.raises(ClusterError, match="1 or more"):
        ClusterSpec(workers=0)
    assert ClusterSpec(workers=2).on_this_machine
    assert ClusterSpec(address="tcp://127.0.0.1:8786").on_this_machine
    assert ClusterSpec(address="tcp://localhost:8786").on_this_machine
    assert not ClusterSpec(address="tcp://10.1.2.3:8786").on_this_machine
    runner = ClusterSpec(workers=3).task_runner()
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    assert runner.cluster_kwargs["processes"] is True


def test_remote_workers_need_a_prefect_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.cluster import _prefect_api_for

    with temporary_settings({PREFECT_API_URL: None}):
        with pytest.raises(ClusterError, match="PREFECT_API_URL"):
            with _prefect_api_for(ClusterSpec(address="tcp://10.1.2.3:8786")):
                pass


def test_an_unreachable_scheduler_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipelines.cluster.CONNECT_TIMEOUT_S", 2)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        ClusterSpec(address="tcp://127.0.0.1:1").check_reachable()
