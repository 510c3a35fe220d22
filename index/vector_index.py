"""A thin, metric-aware wrapper around a faiss index keyed by database primary keys.

In the spirit of faiss ``contrib``: the structure comes from an ``index_factory`` string,
vectors are added with ``add_with_ids`` using int64 database ids, ``search`` returns faiss'
``(D, I)`` pair with the ``-1`` "no result" sentinel, and persistence is
``write_index``/``read_index``. What the wrapper adds:

* **Distances in the model's metric, always ascending.** faiss returns *squared* L2 and
  similarity (not distance) for inner product; callers threshold distances for open-set
  decisions, so we convert at this boundary: ``l2`` -> true Euclidean distance, ``cosine`` ->
  ``1 - cos`` (vectors are L2-normalised on the way in, searched with inner product), ``l1`` ->
  faiss' L1 distance. Slots with id ``-1`` get ``+inf``.
* **Validation with actionable errors** (see :mod:`index.errors`).
* **Per-call search parameters** (``nprobe``, ``ef_search``) passed as faiss
  ``SearchParameters`` objects, so concurrent searches never mutate shared index state.
* **Crash-safe persistence** with a sha256 checksum that the SQL catalogue can record.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

import faiss
import numpy as np

from ._fs import commit_tmp, fsync_path, sha256_file, tmp_path_for, unlink_quiet
from .errors import (
    REPAIR_HINT,
    DimensionMismatchError,
    DuplicateIdError,
    IndexChecksumError,
    IndexCorruptError,
    IndexFileMissingError,
    IndexNotTrainedError,
    InvalidInputError,
    ReadOnlyIndexError,
    TrainingDataError,
    UnsupportedIndexError,
)
from .factory import MIN_POINTS_PER_CENTROID, default_nprobe

logger = logging.getLogger(__name__)

__all__ = ["Metric", "METRICS", "VectorIndex", "batch_searches_through_blas"]

Metric = Literal["l2", "cosine", "l1"]
METRICS: tuple[str, ...] = ("l2", "cosine", "l1")

_FAISS_METRIC: dict[str, int] = {
    "l2": faiss.METRIC_L2,
    "cosine": faiss.METRIC_INNER_PRODUCT,
    "l1": faiss.METRIC_L1,
}
# Inverse used when loading: this wrapper only ever uses inner product for cosine.
_METRIC_FROM_FAISS: dict[int, str] = {v: k for k, v in _FAISS_METRIC.items()}


def batch_searches_through_blas(min_queries: int = 2) -> int:
    """Exhaustive L2 / inner-product distances (flat indexes, IVF coarse quantizers) of
    ``min_queries`` or more queries at once go through BLAS (one matrix product) instead of one
    SIMD loop per query; faiss' default is 20.

    For a service that batches concurrent searches: 8 queries against 20,000 64-d vectors took
    345 us per query through BLAS against 719 us without (one thread, shared 2-core machine);
    a single query is unchanged. Process-wide (a faiss global); returns the previous value.
    """
    previous = int(faiss.cvar.distance_compute_blas_threshold)
    faiss.cvar.distance_compute_blas_threshold = int(min_queries)
    return previous


#: faiss' HNSW default efSearch (16) loses recall on face galleries; 64 is still sub-ms at 1M.
DEFAULT_EF_SEARCH = 64
#: IndexRefine re-ranks k * k_factor candidates exactly; faiss' default (1) re-ranks nothing new.
DEFAULT_K_FACTOR = 4.0
#: ... and at least this many: a small k (the nearest face alone) would otherwise re-rank a
#: handful, and compressed codes confuse the members of one tight cluster (k=1, factor 4:
#: recall@1 0.94 on the tests' clustered gallery). Exact distances of 64 vectors cost ~2 us.
MIN_RERANKED = 64
#: Training sample cap: faiss k-means subsamples to 256 points per centroid anyway, and PQ
#: codebooks (256 centroids each) want up to 256*256 points.
_TRAIN_POINTS_PER_CENTROID = 256
_PQ_KSUB = 256

# Newer faiss (>= 1.10) can mmap flat codes zero-copy for every index type; IO_FLAG_MMAP
# alone only maps IVF inverted lists.
_MMAP_FLAGS = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP)


# --------------------------------------------------------------------------- structure walk


def _down(index: Any) -> Any:
    return faiss.downcast_index(index)


def _walk(index: Any) -> Iterator[Any]:
    """Yield every (downcast) sub-index of a composite index, outermost first."""
    idx = _down(index)
    yield idx
    if isinstance(idx, (faiss.IndexIDMap, faiss.IndexPreTransform)):
        yield from _walk(idx.index)
    elif isinstance(idx, faiss.IndexRefine):
        yield from _walk(idx.base_index)
        yield from _walk(idx.refine_index)
    elif isinstance(idx, faiss.IndexIVF):
        yield from _walk(idx.quantizer)
    elif isinstance(idx, faiss.IndexHNSW) and idx.storage is not None:
        yield from _walk(idx.storage)


def _stores_external_ids(index: Any) -> bool:
    """True if ``add_with_ids`` works natively (IVF, IDMap), possibly behind a PreTransform."""
    idx = _down(index)
    if isinstance(idx, (faiss.IndexIDMap, faiss.IndexIVF)):
        return True
    if isinstance(idx, faiss.IndexPreTransform):
        return _stores_external_ids(idx.index)
    return False


def _supports_remove_ids(index: Any) -> bool:
    idx = _down(index)
    if isinstance(idx, (faiss.IndexIDMap, faiss.IndexPreTransform)):
        return _supports_remove_ids(idx.index)
    # HNSW graphs and IndexRefine have no remove_ids in faiss.
    return isinstance(idx, (faiss.IndexIVF, faiss.IndexFlatCodes))


def _list_ids(ivf: Any) -> Iterator[np.ndarray]:
    """The ids of each non-empty inverted list, as a view on faiss' memory (valid until the
    next one is taken; writing to it relabels the list)."""
    invlists = ivf.invlists
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size == 0:
            continue
        ptr = invlists.get_ids(list_no)
        try:
            yield faiss.rev_swig_ptr(ptr, size)
        finally:
            invlists.release_ids(list_no, ptr)


def _packed_lists(index: Any) -> Any | None:
    """The inverted lists of 4-bit fast-scan codes (packed 32 vectors a block), or None; a
    view that the index owns."""
    for sub in _walk(index):
        if isinstance(sub, faiss.IndexIVF):
            lists: Any = faiss.downcast_InvertedLists(sub.invlists)  # type: ignore[arg-type]
            packed = isinstance(lists, faiss.BlockInvertedLists)  # type: ignore[attr-defined]
            return lists if packed else None
    return None


def _list_sizes(lists: Any) -> np.ndarray:
    return np.fromiter((lists.list_size(i) for i in range(lists.nlist)), np.int64, lists.nlist)


def _clear_packed_tails(lists: Any, before: np.ndarray) -> None:
    """Zero the free slots of the last block of every list that shrank.

    faiss (1.15.1) moves the last entry into a removed one's place and shortens the list, but
    leaves the old 4-bit codes in the slots freed at the end of the last block; adding to the
    list later ORs the new codes into them, so a vector added after a removal is scanned with
    a corrupted code (in a test, 18 of 100 re-added vectors found themselves; 100 of 100 with
    this). ``pack_1`` of a zero code clears a slot's nibbles (faiss' ``pq4_set_packed_element``
    masks them). Empty blocks need nothing: the list's storage is cut to whole blocks.
    """
    packer = lists.packer
    zero_code = np.zeros(packer.code_size, np.uint8)
    zero = faiss.swig_ptr(zero_code)
    after = _list_sizes(lists)
    for list_no in np.flatnonzero(after < before):
        size = int(after[list_no])
        end = min(int(before[list_no]), -(-size // packer.nvec) * packer.nvec)
        if end <= size:
            continue
        codes = lists.get_codes(int(list_no))
        try:
            for slot in range(size, end):
                packer.pack_1_c(zero, slot, codes)
        finally:
            lists.release_codes(int(list_no), codes)


def _mapped_to_drop(top: Any, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An ``IDMap``'s database ids in position order, and which of them are in ``ids``."""
    all_ids = faiss.vector_to_array(top.id_map).astype(np.int64, copy=False)
    return all_ids, np.isin(all_ids, ids)


def _refine_in_place(index: Any) -> bool:
    """``IDMap2`` over ``IndexRefine`` of an IVF base and flat exact codes, unmapped (see
    :meth:`VectorIndex._remove_from_refine`)."""
    top = _down(index)
    if not isinstance(top, faiss.IndexIDMap2):
        return False
    inner = _down(top.index)
    return (
        isinstance(inner, faiss.IndexRefine)
        and isinstance(_down(inner.base_index), faiss.IndexIVF)
        and isinstance(_down(inner.refine_index), faiss.IndexFlatCodes)
    )


def _l1_blocker(index: Any) -> str | None:
    """Name of the first component that cannot compute L1 distances, or None.

    faiss implements METRIC_L1 only for uncompressed codes (IndexFlat, IVF-Flat, HNSW over
    Flat). Quantized codes (PQ, SQ, ...) either raise at search time or, for HNSW,SQ, abort
    the whole process inside an OpenMP region, so we must refuse them up front.
    """
    idx = _down(index)
    if isinstance(idx, (faiss.IndexIDMap, faiss.IndexPreTransform)):
        return _l1_blocker(idx.index)
    if isinstance(idx, faiss.IndexRefine):
        return _l1_blocker(idx.base_index) or _l1_blocker(idx.refine_index)
    if isinstance(idx, faiss.IndexIVFFlat):
        return _l1_blocker(idx.quantizer)
    if isinstance(idx, faiss.IndexHNSW):
        return _l1_blocker(idx.storage)
    if type(idx) is faiss.IndexFlat:
        return None
    return type(idx).__name__


def _describe_factory(index: Any) -> str:
    """Best-effort factory string of a loaded index (the file does not store it)."""
    try:
        from faiss.contrib.factory_tools import reverse_index_factory

        return str(reverse_index_factory(index))
    except Exception:  # NotImplementedError for exotic structures, ImportError on old faiss
        return "+".join(type(i).__name__ for i in _walk(index))


def _build_search_params(
    index: Any, nprobe: int | None, ef_search: int | None, keep: list[Any], k: int = 1
) -> Any | None:
    """faiss SearchParameters for this structure, or None if nothing is overridden (for a
    search of ``k`` neighbours: IndexRefine re-ranks at least :data:`MIN_RERANKED`).

    Parameter objects reference each other through raw C++ pointers, so every object created
    is appended to ``keep``; the caller holds that list until the search returns.
    IndexIDMap(2) forwards ``params`` unchanged to the wrapped index, so we just recurse.
    """
    p: Any  # faiss' type stubs know only some SearchParameters subclasses
    idx = _down(index)
    if isinstance(idx, faiss.IndexIDMap):
        return _build_search_params(idx.index, nprobe, ef_search, keep, k)
    if isinstance(idx, faiss.IndexPreTransform):
        inner = _build_search_params(idx.index, nprobe, ef_search, keep, k)
        if inner is None:
            return None
        p = faiss.SearchParametersPreTransform()
        p.index_params = inner
        keep.append(p)
        return p
    if isinstance(idx, faiss.IndexRefine):
        base = _build_search_params(idx.base_index, nprobe, ef_search, keep, k)
        k_factor = max(float(idx.k_factor), MIN_RERANKED / k)
        if base is None and k_factor == idx.k_factor:
            return None
        p = faiss.IndexRefineSearchParameters()
        p.k_factor = k_factor  # the params object defaults to 1, not the index's value
        if base is not None:
            p.base_index_params = base
        keep.append(p)
        return p
    if isinstance(idx, faiss.IndexIVF):
        quantizer_params = None
        if ef_search is not None and isinstance(_down(idx.quantizer), faiss.IndexHNSW):
            quantizer_params = _build_search_params(idx.quantizer, None, ef_search, keep)
        if nprobe is None and quantizer_params is None:
            return None
        p = faiss.SearchParametersIVF()
        p.nprobe = min(idx.nlist, nprobe) if nprobe is not None else idx.nprobe
        if quantizer_params is not None:
            p.quantizer_params = quantizer_params
        keep.append(p)
        return p
    if isinstance(idx, faiss.IndexHNSW):
        if ef_search is None:
            return None
        p = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        p.efSearch = ef_search
        keep.append(p)
        return p
    return None


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- VectorIndex


class VectorIndex:
    """A faiss index whose ids are database primary keys and whose distances use ``metric``.

    Build with :meth:`create` or :meth:`load`. Searches may run concurrently from several
    threads; mutations (``train``/``add``/``remove``) must be serialised by the caller.
    """

    def __init__(self, index: Any, *, metric: str, factory: str, read_only: bool = False) -> None:
        if metric not in METRICS:
            raise UnsupportedIndexError(f"unknown metric {metric!r}; use one of {METRICS}")
        if index.metric_type != _FAISS_METRIC[metric]:
            raise UnsupportedIndexError(
                f"faiss index uses metric_type {index.metric_type}, which does not implement "
                f"metric {metric!r}; build it with VectorIndex.create(factory, dim, {metric!r})"
            )
        self._index = index
        self._metric = metric
        self._factory = factory
        self._read_only = read_only
        # Sorted copy of the stored ids, built lazily; used to reject duplicate ids on add.
        self._sorted_ids: np.ndarray | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        factory: str,
        dim: int,
        metric: str = "l2",
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        ef_construction: int | None = None,
        k_factor: float | None = None,
    ) -> VectorIndex:
        """Build an empty index from a faiss factory string.

        Structures that cannot store external ids (Flat, HNSW, Refine, PQ...) are wrapped in
        ``IDMap2`` automatically. ``nprobe`` / ``ef_search`` / ``k_factor`` set the default
        search parameters (persisted in the index file); ``ef_construction`` tunes HNSW
        graph quality. Raises :class:`UnsupportedIndexError` for factory strings faiss cannot
        parse and for factory/metric combinations faiss does not implement.
        """
        dim = _check_positive_int(dim, "dim")
        for value, name in ((nprobe, "nprobe"), (ef_search, "ef_search")):
            if value is not None:
                _check_positive_int(value, name)
        if ef_construction is not None:
            _check_positive_int(ef_construction, "ef_construction")
        if k_factor is not None and not k_factor > 0:
            raise InvalidInputError(f"k_factor must be > 0, got {k_factor!r}")
        if metric not in METRICS:
            raise UnsupportedIndexError(f"unknown metric {metric!r}; use one of {METRICS}")
        faiss_metric = _FAISS_METRIC[metric]
        try:
            index = faiss.index_factory(dim, factory, faiss_metric)
        except RuntimeError as exc:
            raise UnsupportedIndexError(
                f"faiss cannot build index_factory string {factory!r} (dim={dim}): "
                f"{_faiss_reason(exc)}; use choose_factory(n, dim, kind) to get a valid one"
            ) from exc
        if not _stores_external_ids(index):
            # Rebuild through the factory rather than faiss.IndexIDMap2(index) so the C++
            # wrapper owns its sub-index (no Python lifetime coupling).
            factory = f"IDMap2,{factory}"
            index = faiss.index_factory(dim, factory, faiss_metric)
        if index.metric_type != faiss_metric:
            raise UnsupportedIndexError(
                f"index_factory string {factory!r} ignores the requested metric {metric!r} "
                f"(it computes metric_type {index.metric_type}); pick a float index structure"
            )
        if metric == "l1":
            blocker = _l1_blocker(index)
            if blocker is not None:
                raise UnsupportedIndexError(
                    f"faiss does not implement metric 'l1' for {blocker} (factory {factory!r}); "
                    "L1 needs uncompressed codes: use kind 'flat', 'hnsw' or 'ivf' "
                    "(IVF...,Flat), or a model trained with metric 'l2'/'cosine'"
                )
        for sub in _walk(index):
            if isinstance(sub, faiss.IndexIVF):
                sub.nprobe = min(sub.nlist, nprobe) if nprobe else default_nprobe(sub.nlist)
            elif isinstance(sub, faiss.IndexHNSW):
                sub.hnsw.efSearch = ef_search or DEFAULT_EF_SEARCH
                if ef_construction:
                    sub.hnsw.efConstruction = ef_construction
            elif isinstance(sub, faiss.IndexRefine):
                sub.k_factor = float(k_factor or DEFAULT_K_FACTOR)
        logger.info("created faiss index %r dim=%d metric=%s", factory, dim, metric)
        return cls(index, metric=metric, factory=factory)

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def factory(self) -> str:
        """Factory string the index was created with (reverse-engineered after ``load``)."""
        return self._factory

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def faiss_index(self) -> Any:
        """The underlying faiss index (escape hatch: distances there are raw faiss values)."""
        return self._index

    @property
    def nlist(self) -> int | None:
        ivf = self._ivf()
        return None if ivf is None else int(ivf.nlist)

    def info(self) -> dict[str, Any]:
        """Plain-data summary for logs, the SQL catalogue and ``siamid doctor``."""
        out: dict[str, Any] = {
            "factory": self.factory,
            "dim": self.dim,
            "metric": self.metric,
            "ntotal": self.ntotal,
            "is_trained": self.is_trained,
            "faiss_version": faiss.__version__,
        }
        for sub in _walk(self._index):
            if isinstance(sub, faiss.IndexIVF) and "nlist" not in out:
                out["nlist"], out["nprobe"] = int(sub.nlist), int(sub.nprobe)
            elif isinstance(sub, faiss.IndexHNSW) and "ef_search" not in out:
                out["ef_search"] = int(sub.hnsw.efSearch)
            elif isinstance(sub, faiss.IndexRefine):
                out["k_factor"] = float(sub.k_factor)
        return out

    def __repr__(self) -> str:
        return (
            f"VectorIndex(factory={self.factory!r}, dim={self.dim}, metric={self.metric!r}, "
            f"ntotal={self.ntotal})"
        )

    # ------------------------------------------------------------------ mutation

    def train(self, sample: np.ndarray, *, max_points: int | None = None, seed: int = 0) -> None:
        """Train the quantizers (IVF centroids, PQ codebooks); a no-op if already trained.

        At most ``max_points`` vectors (default ``256 * max(nlist, 256)``) are drawn from
        ``sample`` with ``np.random.default_rng(seed)`` so training is reproducible.
        """
        self._check_writable("train")
        if self.is_trained:
            logger.debug("train(): index %r is already trained, nothing to do", self.factory)
            return
        x = self._check_vectors(sample, "training vectors")
        n = x.shape[0]
        nlist = self.nlist or 0
        if nlist and n < nlist:
            raise TrainingDataError(
                f"index {self.factory!r} has {nlist} IVF lists and needs at least {nlist} "
                f"training vectors (ideally {MIN_POINTS_PER_CENTROID * nlist}), got {n}; "
                "use choose_factory(n, dim) to size nlist for this gallery, or kind='flat'"
            )
        cap = max_points or _TRAIN_POINTS_PER_CENTROID * max(nlist, _PQ_KSUB)
        if n > cap:
            rows = np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))
            x = np.ascontiguousarray(x[rows])
        x = self._prepare(x)
        logger.info("training %r on %d of %d vectors", self.factory, x.shape[0], n)
        try:
            self._index.train(x)
        except RuntimeError as exc:
            raise TrainingDataError(
                f"faiss could not train {self.factory!r} on {x.shape[0]} vectors: "
                f"{_faiss_reason(exc)}; provide more training vectors or a smaller structure"
            ) from exc

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add ``vectors`` (float32, C-contiguous, shape (n, dim)) under int64 ``ids`` (>= 0)."""
        self._check_writable("add")
        x = self._check_vectors(vectors, "vectors")
        ids = self._check_ids(ids, x.shape[0])
        if not self.is_trained:
            raise IndexNotTrainedError(
                f"index {self.factory!r} must be trained before add(); "
                "call train(sample) with representative embeddings first"
            )
        if x.shape[0] == 0:
            return
        new_sorted = self._reject_duplicates(ids)
        self._index.add_with_ids(self._prepare(x), ids)
        if self._sorted_ids is not None:
            # O(N) merge instead of re-sorting: enrolment often adds a handful of faces.
            pos = np.searchsorted(self._sorted_ids, new_sorted)
            self._sorted_ids = np.insert(self._sorted_ids, pos, new_sorted)
        logger.debug("added %d vectors to %r (ntotal=%d)", len(ids), self.factory, self.ntotal)

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by id; unknown ids are ignored. Returns the number removed.

        HNSW graphs cannot delete in place, nor IndexRefine in faiss (ours removes from an IVF
        base with flat exact codes in place); for the others the index is rebuilt
        from its own stored vectors (exact for Flat storage, lossy-but-stable for SQ/PQ
        storage), which costs O(ntotal) time and transiently ~2x memory.
        """
        self._check_writable("remove")
        ids = self._check_ids(ids, None)
        if len(ids) == 0 or self.ntotal == 0:
            return 0
        packed = _packed_lists(self._index)
        sizes = None if packed is None else _list_sizes(packed)
        if _supports_remove_ids(self._index):
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
        elif _refine_in_place(self._index):
            removed = self._remove_from_refine(ids)
        else:
            removed = self._remove_by_rebuild(ids)
        if sizes is not None:
            _clear_packed_tails(packed, sizes)
        self._sorted_ids = None
        logger.info("removed %d of %d requested ids from %r", removed, len(ids), self.factory)
        return removed

    def _remove_from_refine(self, ids: np.ndarray) -> int:
        """Remove from ``IDMap2`` over ``IndexRefine(IVF..., Flat)`` in place, in O(ntotal)
        memory moves and no re-encoding (a rebuild re-assigns every vector to its IVF list:
        9 s at 1M vectors against ~0.1 s here).

        Inside the refine index vectors are numbered by position, the IVF labels being those
        positions: the removed positions leave both parts (faiss' own ``remove_ids`` of each),
        the IVF labels after them move down by the number removed before them, and the
        ``IDMap2`` map drops their database ids.
        """
        top = _down(self._index)
        refine = _down(top.index)
        all_ids, drop = _mapped_to_drop(top, ids)
        removed = int(drop.sum())
        if removed == 0:
            return 0
        positions = np.flatnonzero(drop).astype(np.int64)
        base, exact = _down(refine.base_index), _down(refine.refine_index)
        for part in (base, exact):
            gone = int(part.remove_ids(faiss.IDSelectorBatch(positions)))
            if gone != removed:
                raise IndexCorruptError(
                    f"index {self.factory!r} is inconsistent: {removed} ids to remove but "
                    f"{type(part).__name__} held {gone} of their positions; {REPAIR_HINT}"
                )
        moved_down = np.cumsum(drop, dtype=np.int64)  # removed positions at or before each
        for labels in _list_ids(base):
            labels -= moved_down[labels]  # relabelled in place
        faiss.copy_array_to_vector(np.ascontiguousarray(all_ids[~drop]), top.id_map)
        top.construct_rev_map()
        refine.ntotal = top.ntotal = exact.ntotal
        return removed

    def _remove_by_rebuild(self, ids: np.ndarray) -> int:
        top = _down(self._index)
        if not isinstance(top, faiss.IndexIDMap):
            raise UnsupportedIndexError(
                f"index {self.factory!r} supports neither remove_ids nor reconstruction; "
                "rebuild it from the vector store without these ids"
            )
        all_ids, drop = _mapped_to_drop(top, ids)
        removed = int(drop.sum())
        if removed == 0:
            return 0
        inner = _down(top.index)
        if not _reconstruct_is_exact(inner):
            logger.warning(
                "remove() on %r re-adds decoded (quantized) vectors; results stay stable but "
                "consider a periodic rebuild from the vector store",
                self.factory,
            )
        vectors = inner.reconstruct_n(0, inner.ntotal)
        rebuilt = faiss.clone_index(self._index)
        rebuilt.reset()  # keeps the trained quantizers, drops vectors and ids
        keep = ~drop
        if keep.any():
            rebuilt.add_with_ids(
                np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(all_ids[keep])
            )
        self._index = rebuilt
        return removed

    # ------------------------------------------------------------------ queries

    def search(
        self,
        x: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest stored vectors of each query row.

        Returns ``(D, I)``: ``D`` float32 (nq, k) ascending distances in the index metric
        (``l2``: Euclidean, ``cosine``: 1 - cos in [0, 2], ``l1``: sum of |diff|), ``I`` int64
        (nq, k) database ids, ``-1`` (with ``D = +inf``) where fewer than k results exist.
        ``nprobe`` (IVF) / ``ef_search`` (HNSW) override the defaults for this call only and
        are ignored by structures that do not have them.
        """
        q = self._check_vectors(x, "queries", copy_if_strided=True)
        k = _check_positive_int(k, "k")
        if nprobe is not None:
            nprobe = _check_positive_int(nprobe, "nprobe")
        if ef_search is not None:
            ef_search = _check_positive_int(ef_search, "ef_search")
        if not self.is_trained:
            raise IndexNotTrainedError(
                f"index {self.factory!r} is not trained (and therefore empty); "
                "train() and add() vectors before searching"
            )
        nq = q.shape[0]
        if nq == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        keep: list[Any] = []
        params = _build_search_params(self._index, nprobe, ef_search, keep, k)
        distances, labels = self._index.search(self._prepare(q), k, params=params)
        del keep  # parameters may be freed only after the C++ search returned
        return self._to_distances(distances, labels), labels.astype(np.int64, copy=False)

    def ids(self) -> np.ndarray:
        """All stored ids (int64, in storage order, unsorted) — for consistency checks."""
        top = _down(self._index)
        if isinstance(top, faiss.IndexIDMap):
            return faiss.vector_to_array(top.id_map).astype(np.int64, copy=True)
        ivf = self._ivf()
        if ivf is not None:
            parts = [ids.astype(np.int64, copy=True) for ids in _list_ids(ivf)]
            return np.concatenate(parts) if parts else np.empty(0, np.int64)
        # Not reachable for indexes built by create(): plain faiss indexes number sequentially.
        return np.arange(self.ntotal, dtype=np.int64)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> str:
        """Atomically write the index to ``path`` and return the file's sha256 hex digest.

        The file appears complete or not at all (tmp file in the same directory, fsync,
        ``os.replace``, directory fsync); record the digest in SQL and pass it to ``load``.
        """
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path_for(final)
        try:
            try:
                faiss.write_index(self._index, str(tmp))
            except RuntimeError as exc:
                raise _as_os_error(exc, tmp) from exc
            fsync_path(tmp)
            digest = sha256_file(tmp)
            commit_tmp(tmp, final, overwrite=True)
        except BaseException:
            unlink_quiet(tmp)
            raise
        logger.info(
            "saved %r (%d vectors) to %s sha256=%s", self.factory, self.ntotal, final, digest
        )
        return digest

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        expected_sha256: str | None = None,
        *,
        expected_dim: int | None = None,
        mmap: bool = False,
    ) -> VectorIndex:
        """Read an index written by :meth:`save`.

        ``expected_sha256`` (from the SQL catalogue) is verified before faiss parses the
        file. ``mmap=True`` maps the codes instead of copying them into RAM; such an index is
        read-only (faiss cannot grow mapped storage).
        """
        p = Path(path)
        if not p.is_file():
            raise IndexFileMissingError(f"FAISS index file {p} does not exist; {REPAIR_HINT}")
        before = _file_identity(p)
        if expected_sha256 is not None:
            actual = sha256_file(p)
            if actual != expected_sha256.strip().lower():
                raise IndexChecksumError(
                    f"FAISS index file {p} is corrupted or was replaced: sha256 {actual} does "
                    f"not match the recorded {expected_sha256}; {REPAIR_HINT}"
                )
        try:
            index = faiss.read_index(str(p), _MMAP_FLAGS if mmap else 0)
        except RuntimeError as exc:
            raise IndexCorruptError(
                f"faiss cannot read index file {p} ({_faiss_reason(exc)}); {REPAIR_HINT}"
            ) from exc
        if expected_sha256 is not None and _file_identity(p) != before:
            # A concurrent save() replaced the file between hashing and reading.
            raise IndexChecksumError(
                f"FAISS index file {p} was replaced while it was being loaded; load it again "
                "with the sha256 recorded for the new version"
            )
        # read_index already returns the concrete, owning type. Never rebind it to
        # faiss.downcast_index(...): that wrapper does not own the C++ object, so the owner
        # would be garbage-collected and the index freed under our feet (segfault).
        if expected_dim is not None and index.d != expected_dim:
            raise DimensionMismatchError(
                f"FAISS index file {p} holds {index.d}-dimensional vectors but the model "
                f"produces {expected_dim}-dimensional embeddings; the file belongs to another "
                f"model version: {REPAIR_HINT}",
                expected=expected_dim,
                got=int(index.d),
            )
        metric = _METRIC_FROM_FAISS.get(index.metric_type)
        if metric is None:
            raise UnsupportedIndexError(
                f"index file {p} uses faiss metric_type {index.metric_type}, which VectorIndex "
                f"does not support (only {METRICS}); {REPAIR_HINT}"
            )
        logger.info("loaded %s (%d vectors, mmap=%s)", p, index.ntotal, mmap)
        return cls(index, metric=metric, factory=_describe_factory(index), read_only=mmap)

    # ------------------------------------------------------------------ helpers

    def _ivf(self) -> Any | None:
        for sub in _walk(self._index):
            if isinstance(sub, faiss.IndexIVF):
                return sub
        return None

    def _check_writable(self, op: str) -> None:
        if self._read_only:
            raise ReadOnlyIndexError(
                f"cannot {op}(): this index was loaded with mmap=True and is read-only; "
                "load it with mmap=False to modify it"
            )

    def _check_vectors(self, x: Any, what: str, *, copy_if_strided: bool = False) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise InvalidInputError(
                f"{what} must be a numpy float32 array of shape (n, {self.dim}), "
                f"got {type(x).__name__}"
            )
        if x.dtype != np.float32:
            raise InvalidInputError(
                f"{what} must have dtype float32, got {x.dtype}; "
                "convert with np.ascontiguousarray(x, dtype=np.float32)"
            )
        if x.ndim != 2:
            hint = " (use x[None, :] for a single vector)" if x.ndim == 1 else ""
            raise InvalidInputError(
                f"{what} must be 2-D of shape (n, {self.dim}), got shape {x.shape}{hint}"
            )
        if x.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"{what} have dimension {x.shape[1]} but the index has dimension {self.dim}; "
                "embeddings must come from the model version this index was built for",
                expected=self.dim,
                got=int(x.shape[1]),
            )
        if not x.flags.c_contiguous:
            if copy_if_strided:  # queries are transient: a copy is harmless
                x = np.ascontiguousarray(x)
            else:
                raise InvalidInputError(
                    f"{what} must be C-contiguous (faiss reads raw memory); "
                    "pass np.ascontiguousarray(x)"
                )
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)[:5].tolist()
            raise InvalidInputError(f"{what} contain NaN/inf values (rows {bad}...)")
        return cast(np.ndarray, x)

    def _check_ids(self, ids: Any, n: int | None) -> np.ndarray:
        if not isinstance(ids, np.ndarray) or ids.dtype != np.int64 or ids.ndim != 1:
            desc = (
                f"{ids.dtype} array of shape {ids.shape}"
                if isinstance(ids, np.ndarray)
                else type(ids).__name__
            )
            raise InvalidInputError(
                f"ids must be a 1-D int64 numpy array, got {desc}; "
                "convert with np.asarray(ids, dtype=np.int64)"
            )
        if n is not None and len(ids) != n:
            raise InvalidInputError(f"got {n} vectors but {len(ids)} ids; they must pair up")
        if len(ids) and ids.min() < 0:
            raise InvalidInputError(
                "ids must be >= 0 (database primary keys); -1 is faiss' 'no result' sentinel"
            )
        return np.ascontiguousarray(ids)

    def _reject_duplicates(self, ids: np.ndarray) -> np.ndarray:
        """Raise DuplicateIdError if ``ids`` repeat or are stored; return them sorted."""
        # IDMap2 keeps a reverse map; a repeated id would silently shadow the earlier vector
        # and the index would disagree with SQL, so duplicates are refused up front.
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise DuplicateIdError(
                f"ids repeated within one add() call: {uniq[counts > 1][:5].tolist()}"
            )
        if self.ntotal == 0:
            self._sorted_ids = np.empty(0, np.int64)
            return uniq
        if self._sorted_ids is None:
            self._sorted_ids = np.sort(self.ids())
        pos = np.searchsorted(self._sorted_ids, uniq)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        present = self._sorted_ids[pos] == uniq
        if present.any():
            raise DuplicateIdError(
                f"ids already in the index: {uniq[present][:5].tolist()}; "
                "remove() them first to replace their vectors"
            )
        return uniq

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        """Map vectors into the space faiss searches (unit sphere for cosine)."""
        if self._metric != "cosine":
            return x
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        zero = norms[:, 0] == 0
        if zero.any():
            raise InvalidInputError(
                f"cosine metric needs non-zero vectors; rows {np.flatnonzero(zero)[:5].tolist()} "
                "are all zeros (check the embedding model output)"
            )
        return np.ascontiguousarray(x / norms, dtype=np.float32)

    def _to_distances(self, distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self._metric == "l2":
            d = np.sqrt(np.maximum(distances, 0.0))  # faiss returns squared L2
        elif self._metric == "cosine":
            # Inner product of unit vectors, descending -> 1 - cos, ascending. Clip the
            # rounding noise (and PQ estimates) into the valid [0, 2] range.
            d = np.clip(1.0 - distances, 0.0, 2.0)
        else:
            d = distances.copy()
        d = d.astype(np.float32, copy=False)
        d[labels < 0] = np.inf
        return d


def _reconstruct_is_exact(index: Any) -> bool:
    """Whether ``reconstruct`` returns the vectors as added (Flat codes, no transform)."""
    idx = _down(index)
    if isinstance(idx, faiss.IndexRefine):
        return _reconstruct_is_exact(idx.refine_index)
    if isinstance(idx, faiss.IndexHNSW):
        return _reconstruct_is_exact(idx.storage)
    return type(idx) is faiss.IndexFlat


def _faiss_reason(exc: BaseException) -> str:
    """faiss' C++ messages span several lines ('Error in <signature> at <file>: <reason>')."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    marker = "Error: "
    return text.split(marker, 1)[1] if marker in text else text


def _file_identity(p: Path) -> tuple[int, int, int]:
    st = p.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _as_os_error(exc: RuntimeError, path: Path) -> BaseException:
    """faiss reports a failed write as a RuntimeError ending in the C library's reason; a full
    disk or quota becomes the ``OSError`` it is, so callers tell it from a bug."""
    for code in (errno.ENOSPC, errno.EDQUOT):
        if f"({os.strerror(code)})" in str(exc):
            return OSError(code, os.strerror(code), str(path))
    return exc
