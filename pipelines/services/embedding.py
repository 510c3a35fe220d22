"""Embedding gallery images: what is pending, one chunk at a time, into the vector store and SQL.

Crash safety, in order of what is written:
1. a chunk's vectors go to a new shard file (tmp + fsync + rename) before anything in SQL;
2. its ``embedding`` rows are committed in one transaction: a kill before that leaves an orphan
   shard that nothing references (collected later) and the images still lack rows, so a re-run
   embeds them again; the unique (face_image, model_version) key forbids duplicates.
Publishing the index from those rows is :mod:`pipelines.services.publishing`.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from pipelines.services.encoding import DEFAULT_BATCH_SIZE, FileItem, encode_files
from pipelines.services.models import ModelRef
from pipelines.services.paging import WorkPlan, keyset_pages
from pipelines.services.refusals import NO_FACE, Refusal
from pipelines.services.runtime import Runtime

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 2048  # images per task: a retry redoes one chunk, not the run

T = TypeVar("T")


@dataclass(frozen=True)
class FailedImage:
    face_image_id: int
    source: str
    refusal: Refusal

    def as_dict(self) -> dict[str, object]:
        """Plain data: the refusal as its text (what the command line prints)."""
        return {
            "face_image_id": self.face_image_id,
            "source": self.source,
            "reason": str(self.refusal),
        }


@dataclass
class ChunkResult:
    embedded: int
    failed: list[FailedImage] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Pending:
    todo: list[FileItem]
    already_embedded: int


@dataclass(frozen=True)
class PendingPlan(WorkPlan):
    """What a run embeds: ``todo`` live images lacking a vector (ids up to ``last_id``, read a
    chunk at a time by :func:`pending_chunks`); ``already_embedded`` live images have one."""

    already_embedded: int


def plan_pending(rt: Runtime, model: ModelRef) -> PendingPlan:
    """How many live images lack a vector under this model (and the largest such id), and how
    many already have one: two counts, no list."""
    from storage.embeddings import count_images_to_embed, count_live_images

    with rt.sessions() as s:
        todo, last_id = count_images_to_embed(session=s, model_version_id=model.id)
        live = count_live_images(session=s)
    return PendingPlan(todo, last_id, live - todo)


def pending_chunks(
    rt: Runtime, model: ModelRef, plan: PendingPlan, size: int
) -> Iterator[list[FileItem]]:
    """The pending images of ``plan`` in chunks of ``size``, by id, each chunk one keyset page
    read when the one before has been taken: the chunks ``chunks(pending_images(...).todo,
    size)`` makes, with one chunk in memory instead of the whole list."""
    from storage.embeddings import images_to_embed

    def read(after_id: int | None, limit: int) -> list[FileItem]:
        with rt.sessions() as s:
            rows = images_to_embed(
                session=s, model_version_id=model.id, after_id=after_id, limit=limit
            )
        return list[FileItem](rows)

    return keyset_pages(read, size, last_id=plan.last_id)


def pending_images(rt: Runtime, model: ModelRef) -> Pending:
    """Live images that lack a vector under this model, and how many already have one.

    The whole list at once: for tests and small galleries. Runs count with
    :func:`plan_pending` and read chunk by chunk with :func:`pending_chunks`.
    """
    from storage.embeddings import count_live_images, images_to_embed

    with rt.sessions() as s:
        todo = images_to_embed(session=s, model_version_id=model.id)
        live = count_live_images(session=s)
    return Pending(todo, live - len(todo))


def still_pending(rt: Runtime, model: ModelRef, items: Sequence[FileItem]) -> list[FileItem]:
    """The items that still lack a vector (a retried chunk skips what its first try committed)."""
    from storage.embeddings import images_to_embed

    ids = [it[0] for it in items]
    with rt.sessions() as s:
        rows = images_to_embed(session=s, model_version_id=model.id, among=ids)
    todo = {fid for fid, _, _ in rows}
    return [it for it in items if it[0] in todo]


def embed_chunk(
    rt: Runtime,
    model: ModelRef,
    items: Sequence[FileItem],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
) -> ChunkResult:
    """Embed gallery images (face_image_id, source, sha256): one shard, then one SQL commit."""
    from index.vector_store import VectorStore
    from storage.embeddings import add_embeddings

    t0 = time.perf_counter()
    if workers and multiprocessing.current_process().daemon:
        workers = 0  # a Dask worker process is daemonic: it cannot start DataLoader processes
    if model.crop.detect:
        keys, vectors, faces, errors = _encode_faces(rt, model, items, batch_size, workers)
    else:
        encoded = encode_files(
            rt.encoders.get(model),
            items,
            rt.limits,
            spec=model.crop,
            batch_size=batch_size,
            workers=workers,
        )
        keys, vectors, faces, errors = encoded.keys, encoded.vectors, None, dict(encoded.errors)
    if keys.size:
        store = VectorStore(rt.settings.vector_store_dir(model.id), model.dim)
        refs = store.write_shard(keys, vectors)
        with rt.sessions.begin() as s:
            add_embeddings(
                session=s,
                model_version_id=model.id,
                rows=list(zip(keys.tolist(), refs, strict=True)),
                faces=faces,
            )
    sources = {fid: src for fid, src, _ in items}
    failed = [FailedImage(fid, sources[fid], err) for fid, err in errors.items()]
    for f in failed:
        logger.warning("could not embed image %d (%s): %s", f.face_image_id, f.source, f.refusal)
    return ChunkResult(int(keys.size), failed, time.perf_counter() - t0)


def _encode_faces(
    rt: Runtime, model: ModelRef, items: Sequence[FileItem], batch_size: int, workers: int
) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, str]], dict[int, Refusal]]:
    """Detect mode: encode the usable faces of each image and keep the person's
    (:mod:`pipelines.services.face_choice`, the model's ``multiple_faces``). Returns (image
    ids, their vectors, (face rank, chosen_by) per image, errors per image)."""
    from pipelines.services.detection import gallery_outcomes
    from pipelines.services.face_choice import choose_gallery_faces, gallery_jobs

    by_id = {it[0]: it for it in items}
    jobs = gallery_jobs(rt, list(by_id), model.scoring.multiple_faces)
    encoded = encode_files(
        rt.encoders.get(model),
        [(k, by_id[fid][1], by_id[fid][2]) for k, fid in enumerate(jobs.image)],
        rt.limits,
        spec=model.crop,
        faces=dict(enumerate(jobs.faces)),
        batch_size=batch_size,
        workers=workers,
    )
    errors = dict(jobs.refused)
    errors.update((jobs.image[k], e) for k, e in encoded.errors.items())
    ok = [k for k in encoded.keys.tolist() if jobs.image[k] not in errors]
    pos = {k: i for i, k in enumerate(encoded.keys.tolist())}
    chosen = choose_gallery_faces(
        rt,
        model,
        [jobs.image[k] for k in ok],
        [jobs.rank[k] for k in ok],
        encoded.vectors[[pos[k] for k in ok]].reshape(len(ok), model.dim),
    )
    # say what detection found instead of a bare "no face"
    missing = [fid for fid in by_id if fid not in chosen and fid not in errors]
    errors.update(dict.fromkeys(missing, NO_FACE))
    errors.update(gallery_outcomes(rt, missing))
    ids = np.asarray(sorted(chosen), dtype=np.int64)
    vectors = np.asarray([chosen[f].vector for f in ids.tolist()], np.float32)
    faces = {
        f: (c.face_rank, "largest" if f in jobs.largest else c.chosen_by) for f, c in chosen.items()
    }
    return ids, vectors.reshape(len(ids), model.dim), faces, errors


@dataclass(frozen=True)
class Revisited:
    """Photos whose face was chosen again: how many were looked at, how many changed face."""

    looked: int = 0
    changed: int = 0


def revisit_face_choices(
    rt: Runtime, model: ModelRef, *, batch_size: int = DEFAULT_BATCH_SIZE, workers: int = 0
) -> Revisited:
    """Photos with several faces whose person gained photos since their face was chosen
    (:mod:`pipelines.services.face_choice`): chosen again against the person's photos now.

    For ``consistent`` models only, and their ``largest`` fallbacks too (chosen when the person
    had nothing to agree with). A changed face's vector goes to a new shard before its row is
    replaced; every row looked at takes one time (``replace_embeddings``), so the next index
    version swaps exactly these vectors and the next run does not look at them again. A photo
    that cannot be encoded now keeps its face.
    """
    from index.vector_store import VectorStore
    from storage.embeddings import choices_to_revisit, replace_embeddings
    from storage.models import utcnow

    if not model.crop.detect or model.scoring.multiple_faces != "consistent":
        return Revisited()
    with rt.sessions() as s:
        rows = choices_to_revisit(
            session=s, model_version_id=model.id, chosen_by=("consistent", "largest")
        )
    if not rows:
        return Revisited()
    stored = {fid: (rank, why) for fid, _, _, rank, why in rows}
    items: list[FileItem] = [(fid, uri, sha) for fid, uri, sha, _, _ in rows]
    keys, vectors, faces, errors = _encode_faces(rt, model, items, batch_size, workers)
    moved = [k for k, f in enumerate(keys.tolist()) if faces[f][0] != stored[f][0]]
    refs: dict[int, str] = {}
    if moved:
        store = VectorStore(rt.settings.vector_store_dir(model.id), model.dim)
        written = store.write_shard(keys[moved], vectors[moved])
        refs = dict(zip(keys[moved].tolist(), written, strict=True))
    for fid, why in errors.items():
        logger.warning("image %d keeps its face: choosing again failed (%s)", fid, why)
    update = [
        (fid, refs.get(fid), *(faces[fid] if fid in faces else stored[fid])) for fid in stored
    ]
    with rt.sessions.begin() as s:
        replace_embeddings(session=s, model_version_id=model.id, rows=update, at=utcnow())
    if moved:
        logger.info(
            "%d photos with several faces now embed another face of their person", len(moved)
        )
    return Revisited(len(rows), len(moved))


@dataclass
class EmbedRun:
    """What embedding every pending image did (the embed flow's chunk loop, in this process)."""

    embedded: int
    already_embedded: int
    failed: list[FailedImage] = field(default_factory=list)


def embed_pending(
    rt: Runtime,
    model: ModelRef,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
) -> EmbedRun:
    """Embed every image that lacks a vector, chunk after chunk, without Prefect (scripts, the
    HTTP service's jobs); the ``embed`` flow runs the same chunks as tasks."""
    plan = plan_pending(rt, model)
    run = EmbedRun(0, plan.already_embedded)
    for items in pending_chunks(rt, model, plan, chunk_size):
        result = embed_chunk(rt, model, items, batch_size=batch_size, workers=workers)
        run.embedded += result.embedded
        run.failed.extend(result.failed)
    return run


def forget_vectors(rt: Runtime, model: ModelRef) -> int:
    """Drop the model's embedding rows so that everything is embedded again (``--full``)."""
    from storage.embeddings import delete_embeddings_of_model

    with rt.sessions.begin() as s:
        return delete_embeddings_of_model(session=s, model_version_id=model.id)


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
