"""Publishing index versions: plan what changes, build beside the published one, publish.

1. :func:`plan_index` reads SQL: the live vectors of the model and the published version;
2. :func:`build_index` makes the new index in memory, incrementally from the published one of
   the same model (drop removed ids, add new ones) or from the vector store;
3. :func:`publish` writes it to its own file under a ``building`` row and publishes that row in
   one transaction. A kill before that leaves a ``building`` row that the next plan retires.
Old files are deleted by :func:`collect_garbage` once readers had time to reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

from pipelines.services.models import ModelRef
from pipelines.services.runtime import Runtime
from storage.models import utcnow

logger = logging.getLogger(__name__)

RETIRED_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class PublishedIndex:
    id: int
    model_version_id: int
    path: str
    sha256: str | None
    factory: str


@dataclass
class IndexPlan:
    """What the next index version of ``model`` holds and what it starts from."""

    model: ModelRef
    live_ids: np.ndarray  # [n] int64 face_image ids with a live vector
    refs: dict[int, str]  # face_image id -> vector store reference
    current: PublishedIndex | None
    factory: str | None  # asked for; None: keep the current one or choose by size
    full: bool
    #: ids whose vector row was written since the current version was built: among the ids it
    #: holds, their vectors were replaced (a face chosen again) and are added anew
    renewed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def incremental(self) -> bool:
        """Start from the published index: same model, same factory, not ``--full``."""
        c = self.current
        return (
            c is not None
            and c.model_version_id == self.model.id
            and not self.full
            and (self.factory is None or self.factory == c.factory)
        )


@dataclass
class BuiltIndex:
    index: object  # index.vector_index.VectorIndex
    added: int
    removed: int
    rebuilt: bool
    changed: bool


@dataclass
class IndexResult:
    index_version_id: int
    vectors: int
    added: int
    removed: int
    factory: str
    rebuilt: bool
    published: bool


def plan_index(
    rt: Runtime, model: ModelRef, *, factory: str | None = None, full: bool = False
) -> IndexPlan:
    """Retire versions left ``building`` by a dead run and read what the new version holds."""
    from storage.embeddings import live_embeddings, renewed_since
    from storage.indexes import abandon_building, published_index

    with rt.sessions.begin() as s:
        for stale in abandon_building(session=s):
            logger.warning("retiring index version %d left building by an earlier run", stale.id)
        live = live_embeddings(session=s, model_version_id=model.id)
        row = published_index(session=s)
        current = (
            None
            if row is None
            else PublishedIndex(row.id, row.model_version_id, row.path, row.sha256, row.factory)
        )
        renewed = (
            renewed_since(session=s, model_version_id=model.id, since=row.created_at)
            if row is not None and row.model_version_id == model.id
            else []
        )
    return IndexPlan(
        model=model,
        live_ids=np.asarray([fid for fid, _ in live], dtype=np.int64),
        refs={fid: ref for fid, ref in live},
        current=current,
        factory=factory,
        full=full,
        renewed=np.asarray(renewed, dtype=np.int64),
    )


def build_index(rt: Runtime, plan: IndexPlan) -> BuiltIndex:
    """The new index in memory; ``changed`` is False when the published one already agrees."""
    from index.factory import choose_factory
    from index.vector_index import VectorIndex
    from index.vector_store import VectorStore

    model = plan.model
    store = VectorStore(rt.settings.vector_store_dir(model.id), model.dim)
    current = plan.current
    if plan.incremental:
        assert current is not None
        index = VectorIndex.load(
            current.path, expected_sha256=current.sha256, expected_dim=model.dim
        )
        have = np.sort(index.ids().astype(np.int64))
        removed = np.setdiff1d(have, plan.live_ids, assume_unique=True)
        added = np.setdiff1d(plan.live_ids, have, assume_unique=True)
        # held, live, but their vector replaced since: out with the old one, in with the new
        replaced = np.intersect1d(np.intersect1d(have, plan.live_ids), plan.renewed)
        if removed.size or replaced.size:
            index.remove(np.union1d(removed, replaced))
        if added.size or replaced.size:
            ids = np.union1d(added, replaced)
            index.add(store.read([plan.refs[int(i)] for i in ids]), ids)
        changed = bool(removed.size or added.size or replaced.size)
        return BuiltIndex(index, int(added.size), int(removed.size), False, changed)

    size = int(plan.live_ids.size)
    chosen = plan.factory or choose_factory(size, model.dim, "auto", model.distance)
    index = VectorIndex.create(chosen, model.dim, model.distance)
    vectors = (
        store.read([plan.refs[int(i)] for i in plan.live_ids])
        if plan.live_ids.size
        else np.zeros((0, model.dim), np.float32)
    )
    if not index.is_trained:
        index.train(vectors)
    if plan.live_ids.size:
        index.add(vectors, plan.live_ids)
    removed = 0
    if current is not None and current.model_version_id == model.id:
        prev = VectorIndex.load(current.path, expected_dim=model.dim)
        removed = int(np.setdiff1d(prev.ids(), plan.live_ids).size)
    return BuiltIndex(index, int(plan.live_ids.size), removed, True, True)


def publish(rt: Runtime, plan: IndexPlan, built: BuiltIndex) -> IndexResult:
    """Write the built index under a new version and publish it; unchanged: keep the current."""
    from storage.indexes import create_index_version, publish_index_version

    index = built.index
    if not built.changed and plan.current is not None:
        return IndexResult(plan.current.id, index.ntotal, 0, 0, plan.current.factory, False, False)
    rt.settings.indexes_dir.mkdir(parents=True, exist_ok=True)
    with rt.sessions.begin() as s:
        row = create_index_version(
            session=s, model_version_id=plan.model.id, factory=index.factory, path=""
        )
        row.path = str(rt.settings.index_file(row.id, plan.model.id))
        iv_id, path = row.id, row.path
    sha = index.save(path)
    with rt.sessions.begin() as s:
        publish_index_version(
            session=s, index_version_id=iv_id, sha256=sha, vector_count=index.ntotal
        )
    logger.info("published index version %d (%s, %d vectors)", iv_id, index.factory, index.ntotal)
    return IndexResult(
        iv_id, index.ntotal, built.added, built.removed, index.factory, built.rebuilt, True
    )


def build_and_publish(
    rt: Runtime, model: ModelRef, *, factory: str | None = None, full: bool = False
) -> IndexResult:
    """Plan, build and publish in one call (the embed flow's last task, ``doctor --repair``)."""
    plan = plan_index(rt, model, factory=factory, full=full)
    return publish(rt, plan, build_index(rt, plan))


@dataclass
class Collected:
    index_files: int
    orphan_shards: int


def collect_garbage(rt: Runtime, grace: timedelta = RETIRED_GRACE) -> Collected:
    """Delete files of versions retired longer than ``grace`` ago, and orphan shards as old.

    Readers that loaded an old index keep working until they reload; the grace period is how
    long they have.
    """
    from index.vector_store import VectorStore
    from storage.embeddings import referenced_shards
    from storage.indexes import retired_before
    from storage.registry import list_model_versions

    cutoff = utcnow() - grace
    files = shards = 0
    with rt.sessions() as s:
        for row in retired_before(session=s, cutoff=cutoff):
            p = Path(row.path)
            if row.path and p.is_file():
                p.unlink()
                files += 1
        for mv in list_model_versions(session=s):
            folder = rt.settings.vector_store_dir(mv.id)
            if not folder.is_dir() or mv.embedding_dim <= 0:
                continue
            store = VectorStore(folder, mv.embedding_dim)
            used = referenced_shards(session=s, model_version_id=mv.id)
            shards += len(
                store.remove_shards(store.find_orphans(used, min_age_s=grace.total_seconds()))
            )
            store.clean_partial(min_age_s=grace.total_seconds())
    return Collected(files, shards)
