"""The embed flow's steps: incremental, removal, new models, bad input, crash safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from index.errors import IndexChecksumError
from pipelines.services import doctor
from pipelines.services.enrolment import remove_identity
from pipelines.services.errors import ModelError
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.identification import Identifier
from pipelines.services.indexing import index_pending
from pipelines.services.models import resolve_model
from pipelines.services.runtime import Runtime
from siamese.synthetic import generate_gallery
from storage.models import Embedding, IndexVersion
from tests.support import quick_model


def _count(rt: Runtime, model_name: str) -> int:
    with rt.sessions() as s:
        mid = resolve_model(rt.sessions, model_name).id
        return int(
            s.scalar(
                select(func.count()).select_from(Embedding).where(Embedding.model_version_id == mid)
            )
            or 0
        )


def test_no_model_is_a_clear_error(rt: Runtime, imported: Path) -> None:
    with pytest.raises(ModelError, match="siamid train"):
        index_pending(rt)


def test_full_then_incremental_then_removal(rt: Runtime, model: str, tmp_path: Path) -> None:
    run = index_pending(rt, model, batch_size=8, chunk_size=10)
    embedded, skipped, failed, index = (
        run.embedded,
        run.skipped,
        run.failed,
        run.index,
    )
    assert (embedded, skipped, failed) == (32, 0, [])
    assert index.published and index.vectors == 32
    assert doctor.diagnose(rt).ok

    # Unchanged: nothing embedded, the published version stays.
    run = index_pending(rt, model)
    embedded, skipped, again = run.embedded, run.skipped, run.index
    assert (embedded, skipped, again.published) == (0, 32, False)
    assert again.index_version_id == index.index_version_id

    # New people: only they are embedded, appended to a copy of the published index.
    more = tmp_path / "more"
    generate_gallery(more, identities=2, per_identity=3, seed=3, first_identity=50)
    import_items(scan_image_folder(more), sessions=rt.sessions)
    run = index_pending(rt, model)
    embedded, skipped, grown = run.embedded, run.skipped, run.index
    assert (embedded, skipped, grown.added, grown.vectors) == (6, 32, 6, 38)
    assert grown.index_version_id != index.index_version_id

    # Removal: rows go at once, vectors at the next embed; never returned in between.
    removed = remove_identity(rt, "person_0050")
    assert len(removed) == 3
    report = doctor.diagnose(rt)
    assert not report.ok and sorted(report.index_only_ids) == sorted(removed)
    ident = Identifier(rt, threshold=10.0, top_k=20)
    probe = more / "person_0050" / "000.png"
    assert all(c.identity != "person_0050" for c in ident.identify([probe])[0].candidates)
    run = index_pending(rt, model)
    shrunk = run.index
    assert (shrunk.removed, shrunk.vectors) == (3, 35)
    assert doctor.diagnose(rt).ok
    with rt.sessions() as s:
        statuses = [r.status for r in s.scalars(select(IndexVersion).order_by(IndexVersion.id))]
    assert statuses.count("published") == 1 and statuses[-1] == "published"


def test_new_model_gets_its_own_index(rt: Runtime, model: str) -> None:
    run = index_pending(rt, model)
    first = run.index
    newer = quick_model(rt, seed=1)
    run = index_pending(rt)  # default: the newest model
    m2, embedded, second = run.model, run.embedded, run.index
    assert m2.name == newer and embedded == 32 and second.published
    with rt.sessions() as s:
        old = s.get_one(IndexVersion, first.index_version_id)
        assert old.status == "retired"
    assert doctor.diagnose(rt).ok


def test_corrupted_index_is_refused_and_repaired(rt: Runtime, model: str) -> None:
    run = index_pending(rt, model)
    index = run.index
    with rt.sessions() as s:
        path = Path(s.get_one(IndexVersion, index.index_version_id).path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexChecksumError, match="doctor --repair"):
        Identifier(rt)
    assert not doctor.diagnose(rt).ok
    repaired = doctor.repair(rt)
    assert repaired["vectors"] == 32
    assert doctor.diagnose(rt).ok


def test_altered_checkpoint_is_refused(rt: Runtime, model: str) -> None:
    ckpt = Path(resolve_model(rt.sessions, model).checkpoint)
    ckpt.write_bytes(ckpt.read_bytes() + b"x")
    with pytest.raises(ModelError, match="sha256"):
        index_pending(rt, model)
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(IndexVersion)) == 0


def test_unreadable_image_is_reported_and_the_rest_embedded(
    rt: Runtime, model: str, imported: Path
) -> None:
    victim = imported / "person_0001" / "001.png"
    victim.write_bytes(b"changed since import")
    run = index_pending(rt, model)
    embedded, failed, index = run.embedded, run.failed, run.index
    assert embedded == 31 and len(failed) == 1 and failed[0].refusal.reason == "changed"
    assert index.vectors == 31


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import storage.embeddings, storage.indexes
    from pipelines.services.runtime import open_runtime
    from pipelines.settings import Settings
    from pipelines.services.indexing import index_pending

    point, after = sys.argv[1], int(sys.argv[2])
    calls = {"n": 0}
    def killer(original):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        return wrapped
    module = storage.embeddings if point == "rows" else storage.indexes
    name = "add_embeddings" if point == "rows" else "publish_index_version"
    setattr(module, name, killer(getattr(module, name)))
    index_pending(open_runtime(Settings()), sys.argv[3], batch_size=4, chunk_size=5, workers=0)
""")


@pytest.mark.slow
@pytest.mark.parametrize(("point", "after"), [("rows", 0), ("rows", 3), ("publish", 0)])
def test_sigkill_then_rerun_finishes_with_no_duplicate_or_missing(
    rt: Runtime, model: str, point: str, after: int
) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, point, str(after), model],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    run = index_pending(rt, model)
    embedded, skipped, index = run.embedded, run.skipped, run.index
    assert embedded + skipped == 32
    assert index.vectors == 32 and _count(rt, model) == 32
    report = doctor.diagnose(rt)
    assert report.ok, report.problems
    with rt.sessions() as s:
        ids = s.scalars(select(Embedding.face_image_id)).all()
    assert len(ids) == len(set(ids)) == 32
    # The vectors of the rerun are the ones the index serves.
    ident = Identifier(rt, threshold=10.0, top_k=1)
    assert ident.index.ntotal == 32 and np.unique(ident.index.ids()).size == 32
    json.dumps(report.as_dict())


def _count_forwards(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Wrap the cached encoder so every forward call and image is counted."""
    import pipelines.services.models as models_mod

    counts = {"calls": 0, "images": 0}
    original = models_mod.load_encoder

    def counting(model):  # type: ignore[no-untyped-def]
        loaded = original(model)
        encoder = loaded.module

        class Counting(type(encoder)):  # type: ignore[misc]
            def forward(self, x):  # type: ignore[no-untyped-def]
                counts["calls"] += 1
                counts["images"] += int(x.shape[0])
                return super().forward(x)

        encoder.__class__ = Counting
        return loaded

    monkeypatch.setattr(models_mod, "load_encoder", counting)
    return counts


def test_incremental_embeds_exactly_the_new_images(
    rt: Runtime, model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = _count_forwards(monkeypatch)
    index_pending(rt, model, batch_size=8)
    assert counts["images"] == 32
    counts.update(calls=0, images=0)
    run = index_pending(rt, model)
    embedded, index = run.embedded, run.index
    assert embedded == 0 and counts["calls"] == 0 and not index.published

    extra = tmp_path / "ten"
    generate_gallery(extra, identities=5, per_identity=2, seed=3, first_identity=70)
    assert import_items(scan_image_folder(extra), sessions=rt.sessions).new == 10
    run = index_pending(rt, model, batch_size=4)
    embedded, index = run.embedded, run.index
    assert embedded == 10 and counts["images"] == 10 and index.vectors == 42


def test_readers_never_see_a_partial_index_while_versions_are_published(
    rt: Runtime, model: str, tmp_path: Path
) -> None:
    """Threads keep loading the published index and searching while new versions publish."""
    import threading

    from index.vector_index import VectorIndex
    from storage.indexes import published_index

    run = index_pending(rt, model)
    first = run.index
    published_counts = {first.vectors}
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []
    dim = resolve_model(rt.sessions, model).dim
    query = np.random.default_rng(0).standard_normal((3, dim)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)

    def reader() -> None:
        while not stop.is_set():
            try:
                with rt.sessions() as s:
                    row = published_index(session=s)
                    assert row is not None
                    path, sha, count = row.path, row.sha256, row.vector_count
                index = VectorIndex.load(path, expected_sha256=sha, expected_dim=dim)
                assert index.ntotal == count
                d, i = index.search(query, 5)
                assert (i >= 0).all() and np.isfinite(d).all()
                seen.append(index.ntotal)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(3):
            extra = tmp_path / f"wave{n}"
            generate_gallery(
                extra, identities=2, per_identity=2, seed=3, first_identity=100 + 2 * n
            )
            import_items(scan_image_folder(extra), sessions=rt.sessions)
            run = index_pending(rt, model)
            index = run.index
            published_counts.add(index.vectors)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors[0]
    assert seen and set(seen) <= published_counts


@pytest.mark.postgres
def test_embed_remove_doctor_on_postgres(
    postgres_url: str, siamid_home: Path, tiny_gallery: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.services.runtime import open_runtime
    from pipelines.settings import Settings

    monkeypatch.setenv("SIAMID_DATABASE_URL", postgres_url)
    rt = open_runtime(Settings())
    assert import_items(scan_image_folder(tiny_gallery), sessions=rt.sessions).new == 32
    name = quick_model(rt)
    run = index_pending(rt, name)
    embedded, index = run.embedded, run.index
    assert embedded == 32 and index.published and doctor.diagnose(rt).ok
    assert len(remove_identity(rt, "person_0001")) == 4
    run = index_pending(rt, name)
    shrunk = run.index
    assert (shrunk.removed, shrunk.vectors) == (4, 28)
    assert doctor.diagnose(rt).ok
    # Identification's one joined look-up, on an autocommit PostgreSQL session.
    ident = Identifier(rt, threshold=10.0, top_k=20)
    removed, kept = (
        sorted((tiny_gallery / p).glob("*.png"))[0] for p in ("person_0001", "person_0002")
    )
    gone, found = ident.identify([removed, kept])
    assert all(c.identity != "person_0001" for c in gone.candidates)
    assert found.decision == "match" and "person_0002" in {c.identity for c in found.candidates}
    rt.engine.dispose()


def test_pending_chunks_are_the_chunks_of_the_whole_list(rt: Runtime, model: str) -> None:
    """Runs read the pending images a keyset page (a chunk) at a time: the same chunks, in the
    same order, as the one list, while the chunks before are embedded."""
    from pipelines.services import embedding

    ref = resolve_model(rt.sessions, model)
    whole = embedding.pending_images(rt, ref).todo
    plan = embedding.plan_pending(rt, ref)
    assert (plan.todo, plan.already_embedded, plan.last_id) == (32, 0, whole[-1][0])
    for size in (1, 5, 32, 100):
        got = list(embedding.pending_chunks(rt, ref, plan, size))
        assert got == embedding.chunks(whole, size)
        assert plan.chunk_count(size) == len(got)
    with pytest.raises(ValueError, match="at least 1"):
        embedding.pending_chunks(rt, ref, plan, 0)

    done = []
    for items in embedding.pending_chunks(rt, ref, plan, 10):
        done.append(items)
        if len(done) == 2:
            break
        assert embedding.embed_chunk(rt, ref, items, workers=0).embedded == 10
    assert done == embedding.chunks(whole, 10)[:2]
    again = embedding.plan_pending(rt, ref)
    assert (again.todo, again.already_embedded, again.last_id) == (22, 10, whole[-1][0])
    assert list(embedding.pending_chunks(rt, ref, again, 10)) == embedding.chunks(whole[10:], 10)
    run = embedding.embed_pending(rt, ref, chunk_size=7, workers=0)
    assert (run.embedded, run.already_embedded, run.failed) == (22, 10, [])
    assert embedding.plan_pending(rt, ref) == embedding.PendingPlan(0, None, 32)
    assert list(embedding.pending_chunks(rt, ref, embedding.plan_pending(rt, ref), 10)) == []
