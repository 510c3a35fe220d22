"""The ``embed`` flow: gallery images -> vectors (durable store + SQL rows) -> a published index.

Crash safety, in order of what is written:
1. a batch's vectors go to a new shard file (tmp + fsync + rename) before anything in SQL;
2. its ``embedding`` rows are committed in one transaction: a kill before that leaves an orphan
   shard that nothing references (collected later) and the images still lack rows, so a re-run
   embeds them again; the unique (face_image, model_version) key forbids duplicates;
3. an index version is built from the SQL rows into its own file, then published by one
   transaction. A kill before that leaves a ``building`` row that the next run retires.
So a re-run after SIGKILL at any point finishes the job with no duplicate and no missing vector.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines.errors import ModelError
from pipelines.runtime import Runtime
from storage.models import ModelVersion, utcnow

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256
DEFAULT_CHUNK = 2048  # images per Prefect task: a retry redoes one chunk, not the run
RETIRED_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class ModelRef:
    """What the embedding steps need to know about a model version (plain data for tasks)."""

    id: int
    name: str
    checkpoint: str
    checkpoint_sha256: str
    dim: int
    distance: str


@dataclass
class BatchResult:
    embedded: int
    failed: list[tuple[int, str, str]]  # (face_image_id, source, reason)
    seconds: float


@dataclass
class IndexResult:
    index_version_id: int
    vectors: int
    added: int
    removed: int
    factory: str
    rebuilt: bool
    published: bool


# ------------------------------------------------------------------ model


def resolve_model(rt: Runtime, ref: str | None) -> ModelRef:
    """The named model, else the newest registered one; refuses two-channel and missing models."""
    from storage.registry import get_model_version, latest_model_version

    with rt.sessions() as s:
        row: ModelVersion | None = (
            get_model_version(session=s, ref=ref) if ref else latest_model_version(session=s)
        )
        if row is None:
            raise ModelError("no trained model yet; run `siamid train --data PATH` first")
        model = ModelRef(
            row.id,
            row.name,
            row.checkpoint_path,
            row.checkpoint_sha256,
            row.embedding_dim,
            row.distance,
        )
        arch = row.architecture
    if arch == "two-channel" or model.dim <= 0:
        raise ModelError(
            f"model {model.name} is a two-channel net: it scores pairs and has no per-image "
            "embedding to index; train a siamese or pseudo model for `embed`"
        )
    return model


_ENCODERS: dict[str, Any] = {}


def load_encoder(model: ModelRef) -> Any:
    """The model's encoder, checked against the registered checksum; cached per process."""
    from pipelines.train import sha256_file
    from siamese.training import load_checkpoint

    if model.checkpoint_sha256 in _ENCODERS:
        return _ENCODERS[model.checkpoint_sha256]
    path = Path(model.checkpoint)
    if not path.is_file():
        raise ModelError(
            f"the checkpoint of model {model.name} is missing at {path}; retrain with "
            "`siamid train` or restore the file"
        )
    if sha256_file(path) != model.checkpoint_sha256:
        raise ModelError(
            f"the checkpoint {path} of model {model.name} does not match its registered "
            "sha256 (altered or replaced); restore it or train a new model"
        )
    ckpt = load_checkpoint(path)
    encoder = ckpt.encoder
    if encoder is None:
        raise ModelError(f"model {model.name} has no encoder to embed with")
    encoder.eval()
    _ENCODERS[model.checkpoint_sha256] = (encoder, ckpt.encoder_config)
    return _ENCODERS[model.checkpoint_sha256]


# ------------------------------------------------------------------ embedding


class FaceFiles:
    """Decodes and preprocesses image files in DataLoader workers; bad files become errors.

    With a recorded sha256, the bytes are checked against it: a file changed on disk since
    its import is not silently embedded under the old row.
    """

    def __init__(
        self, items: Sequence[tuple[int, str, str | None]], encoder_config: Any, limits: Any
    ) -> None:
        self.items = list(items)
        self.cfg = encoder_config
        self.limits = limits

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, int, str]:
        import hashlib

        import torch

        from siamese.data import preprocess
        from siamese.images import ImageRejected, decode_bytes

        key, source, sha = self.items[i]
        h, w = self.cfg.input_size
        blank = torch.zeros(self.cfg.in_channels, h, w)
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            return blank, key, f"missing: {source} does not exist"
        except OSError as exc:
            return blank, key, f"unreadable: {exc.strerror or exc}"
        if sha is not None and hashlib.sha256(data).hexdigest() != sha:
            return blank, key, "changed: the bytes differ from the imported ones; re-import"
        try:
            img = decode_bytes(data, limits=self.limits, name=source).image
        except ImageRejected as rej:
            return blank, key, f"{rej.reason}: {rej.detail}"
        return preprocess(img, self.cfg), key, ""


def encode_files(
    encoder: Any,
    encoder_config: Any,
    items: Sequence[tuple[int, str, str | None]],
    limits: Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Embed files by key: (keys embedded [n], vectors [n, d] float32, {key: error}).

    Worker processes decode and resize while the model runs; on a GPU the forward pass uses
    channels_last and mixed precision.
    """
    import torch
    from torch.utils.data import DataLoader

    from siamese.device import resolve_device, uses_mixed_precision

    device = resolve_device("auto")
    encoder = encoder.to(device).to(memory_format=torch.channels_last).eval()
    amp = uses_mixed_precision(device)
    loader = DataLoader(
        FaceFiles(items, encoder_config, limits),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    vectors: list[np.ndarray] = []
    keys: list[int] = []
    errors: dict[int, str] = {}
    with torch.inference_mode():
        for x, batch_keys, batch_errors in loader:
            ok = torch.tensor([not e for e in batch_errors], dtype=torch.bool)
            errors.update(
                (k, e) for k, e in zip(batch_keys.tolist(), batch_errors, strict=True) if e
            )
            if not bool(ok.any()):
                continue
            x = x[ok].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=amp):
                out = encoder(x)
            vectors.append(out.float().cpu().numpy())
            keys.extend(batch_keys[ok].tolist())
    dim = int(vectors[0].shape[1]) if vectors else 0
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    return np.asarray(keys, np.int64), np.ascontiguousarray(stacked, np.float32), errors


def embed_images(
    rt: Runtime,
    model: ModelRef,
    items: Sequence[tuple[int, str, str]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
) -> BatchResult:
    """Embed gallery images (face_image_id, source, sha256): one shard, then one SQL commit."""
    from index.vector_store import VectorStore
    from storage.embeddings import add_embeddings

    t0 = time.perf_counter()
    encoder, encoder_config = load_encoder(model)
    ids, vectors, errors = encode_files(
        encoder, encoder_config, items, rt.limits, batch_size=batch_size, workers=workers
    )
    if ids.size:
        store = VectorStore(rt.settings.vectors_dir / f"model-{model.id}", model.dim)
        refs = store.write_shard(ids, vectors)
        with rt.sessions.begin() as s:
            add_embeddings(
                session=s,
                model_version_id=model.id,
                rows=list(zip(ids.tolist(), refs, strict=True)),
            )
    sources = {fid: src for fid, src, _ in items}
    failed = [(fid, sources[fid], err) for fid, err in errors.items()]
    for fid, source, reason in failed:
        logger.warning("could not embed image %d (%s): %s", fid, source, reason)
    return BatchResult(int(ids.size), failed, time.perf_counter() - t0)


def pending_images(rt: Runtime, model: ModelRef) -> tuple[list[tuple[int, str, str]], int]:
    """Live images that lack a vector under this model, and how many already have one."""
    from storage.embeddings import count_live_images, images_to_embed

    with rt.sessions() as s:
        todo = images_to_embed(session=s, model_version_id=model.id)
        live = count_live_images(session=s)
    return todo, live - len(todo)


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# ------------------------------------------------------------------ index


def build_and_publish(
    rt: Runtime,
    model: ModelRef,
    *,
    factory: str | None = None,
    full: bool = False,
) -> IndexResult:
    """Build a new index version beside the published one and publish it in one transaction.

    Incremental by default: the published index of the same model is copied, vectors of
    removed images are dropped and new ones added. A new model, ``full`` or a new factory
    builds from the vector store. Nothing changed: the published version stays.
    """
    from index.factory import choose_factory
    from index.vector_index import VectorIndex
    from index.vector_store import VectorStore
    from storage.embeddings import live_embeddings
    from storage.indexes import (
        abandon_building,
        create_index_version,
        publish_index_version,
        published_index,
    )

    store = VectorStore(rt.settings.vectors_dir / f"model-{model.id}", model.dim)
    with rt.sessions.begin() as s:
        for stale in abandon_building(session=s):
            logger.warning("retiring index version %d left building by an earlier run", stale.id)
        live = live_embeddings(session=s, model_version_id=model.id)
        current = published_index(session=s)
        current_info = (
            None
            if current is None
            else (
                current.id,
                current.model_version_id,
                current.path,
                current.sha256,
                current.factory,
            )
        )
    live_ids = np.asarray([fid for fid, _ in live], dtype=np.int64)
    refs = {fid: ref for fid, ref in live}

    base: VectorIndex | None = None
    if (
        current_info is not None
        and current_info[1] == model.id
        and not full
        and (factory is None or factory == current_info[4])
    ):
        base = VectorIndex.load(
            current_info[2], expected_sha256=current_info[3], expected_dim=model.dim
        )
        have = np.sort(base.ids().astype(np.int64))
        removed = np.setdiff1d(have, live_ids, assume_unique=True)
        added = np.setdiff1d(live_ids, have, assume_unique=True)
        if removed.size == 0 and added.size == 0:
            return IndexResult(
                current_info[0],
                int(have.size),
                0,
                0,
                current_info[4],
                rebuilt=False,
                published=False,
            )
        if removed.size:
            base.remove(removed)
        if added.size:
            base.add(store.read([refs[int(i)] for i in added]), added)
        index, chosen, n_removed, n_added, rebuilt = (
            base,
            current_info[4],
            int(removed.size),
            int(added.size),
            False,
        )
    else:
        chosen = factory or choose_factory(int(live_ids.size), model.dim, "auto")
        index = VectorIndex.create(chosen, model.dim, model.distance)
        vectors = (
            store.read([refs[int(i)] for i in live_ids])
            if live_ids.size
            else np.zeros((0, model.dim), np.float32)
        )
        if not index.is_trained:
            index.train(vectors)
        if live_ids.size:
            index.add(vectors, live_ids)
        n_removed = 0
        if current_info is not None and current_info[1] == model.id:
            prev = VectorIndex.load(current_info[2], expected_dim=model.dim)
            n_removed = int(np.setdiff1d(prev.ids(), live_ids).size)
        n_added, rebuilt = int(live_ids.size), True

    rt.settings.indexes_dir.mkdir(parents=True, exist_ok=True)
    with rt.sessions.begin() as s:
        row = create_index_version(
            session=s, model_version_id=model.id, factory=index.factory, path=""
        )
        row.path = str(rt.settings.indexes_dir / f"index-{row.id:06d}-model-{model.id}.faiss")
        iv_id, path = row.id, row.path
    sha = index.save(path)
    with rt.sessions.begin() as s:
        publish_index_version(
            session=s, index_version_id=iv_id, sha256=sha, vector_count=index.ntotal
        )
    logger.info("published index version %d (%s, %d vectors)", iv_id, index.factory, index.ntotal)
    return IndexResult(iv_id, index.ntotal, n_added, n_removed, index.factory, rebuilt, True)


def collect_garbage(rt: Runtime, grace: timedelta = RETIRED_GRACE) -> dict[str, int]:
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
            folder = rt.settings.vectors_dir / f"model-{mv.id}"
            if not folder.is_dir() or mv.embedding_dim <= 0:
                continue
            store = VectorStore(folder, mv.embedding_dim)
            used = referenced_shards(session=s, model_version_id=mv.id)
            shards += len(
                store.remove_shards(store.find_orphans(used, min_age_s=grace.total_seconds()))
            )
            store.clean_partial(min_age_s=grace.total_seconds())
    return {"index_files": files, "orphan_shards": shards}


def forget_vectors(rt: Runtime, model: ModelRef) -> int:
    """Drop the model's embedding rows so that everything is embedded again (``--full``)."""
    from storage.embeddings import delete_embeddings_of_model

    with rt.sessions.begin() as s:
        return delete_embeddings_of_model(session=s, model_version_id=model.id)


def embed_gallery(
    rt: Runtime,
    model_ref: str | None = None,
    *,
    factory: str | None = None,
    full: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[ModelRef, int, int, list[tuple[int, str, str]], IndexResult]:
    """The embed flow's steps without Prefect (for scripts, benchmarks and crash tests).

    Returns (model, embedded, skipped, failed, index result).
    """
    model = resolve_model(rt, model_ref)
    load_encoder(model)
    if full:
        forget_vectors(rt, model)
    todo, skipped = pending_images(rt, model)
    embedded, failed = 0, []
    for items in chunks(todo, chunk_size):
        result = embed_images(rt, model, items, batch_size=batch_size, workers=workers)
        embedded += result.embedded
        failed.extend(result.failed)
    index = build_and_publish(rt, model, factory=factory, full=full)
    return model, embedded, skipped, failed, index


# ------------------------------------------------------------------ Prefect


def _rt() -> Runtime:
    from pipelines.runtime import open_runtime
    from pipelines.settings import Settings

    return open_runtime(Settings())


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def embed_chunk(
    model: ModelRef, items: list[tuple[int, str, str]], batch_size: int, workers: int
) -> BatchResult:
    """One chunk of images: a retry redoes this chunk only (its rows commit together)."""
    rt = _rt()
    from storage.embeddings import images_to_embed

    # A retry after a partial failure must not embed what the first try committed.
    with rt.sessions() as s:
        still = {fid for fid, _, _ in images_to_embed(session=s, model_version_id=model.id)}
    return embed_images(
        rt, model, [it for it in items if it[0] in still], batch_size=batch_size, workers=workers
    )


@task(cache_policy=NO_CACHE)
def publish_index(model: ModelRef, factory: str | None, full: bool) -> IndexResult:
    return build_and_publish(_rt(), model, factory=factory, full=full)


@task(cache_policy=NO_CACHE)
def garbage(grace_seconds: float) -> dict[str, int]:
    return collect_garbage(_rt(), timedelta(seconds=grace_seconds))


@flow(name="embed")
def embed_flow(
    model: str | None = None,
    factory: str | None = None,
    full: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
    grace_seconds: float = RETIRED_GRACE.total_seconds(),
) -> dict[str, Any]:
    """Embed what lacks a vector, drop what was removed, publish a new index version."""
    rt = _rt()
    m = resolve_model(rt, model)
    load_encoder(m)  # a missing or altered checkpoint fails here, before any work
    if full:
        forget_vectors(rt, m)
    todo, skipped = pending_images(rt, m)
    embedded, failed = 0, []
    batches = chunks(todo, chunk_size)
    for n, items in enumerate(batches, start=1):
        result = embed_chunk(m, items, batch_size, workers)
        embedded += result.embedded
        failed.extend(result.failed)
        print(
            f"embedded chunk {n}/{len(batches)}: {embedded}/{len(todo)} images "
            f"({result.embedded / max(result.seconds, 1e-9):.0f} img/s)",
            flush=True,
        )
    index = publish_index(m, factory, full)
    gc = garbage(grace_seconds)
    return {
        "model_version": m.name,
        "model_version_id": m.id,
        "embedded": embedded,
        "skipped": skipped,
        "failed": len(failed),
        "failed_images": [{"face_image_id": f, "source": s, "reason": r} for f, s, r in failed],
        "removed": index.removed,
        "added": index.added,
        "vectors": index.vectors,
        "index_version": index.index_version_id,
        "factory": index.factory,
        "published": index.published,
        "rebuilt": index.rebuilt,
        "collected": gc,
    }
