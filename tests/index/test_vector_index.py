"""VectorIndex: recall against exact search, distance semantics, ids, errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from index import (
    DimensionMismatchError,
    DuplicateIdError,
    IndexNotTrainedError,
    InvalidInputError,
    TrainingDataError,
    UnsupportedIndexError,
    VectorIndex,
    VectorIndexError,
    choose_factory,
)

N = 5_000
DIM = 64

# recall@1 vs exact IndexFlat on the clustered gallery, with default search parameters.
# IVF-PQ compresses 64 floats into 16 bytes, so neighbours inside one tight identity cluster
# get confused now and then (measured ~0.96 for cosine): we require >= 0.90. With the exact
# re-ranking stage (RFlat, k_factor 4) it must be as good as the others.
RECALL_BOUND = {
    "flat": 0.99,
    "ivf": 0.99,
    "ivf-fastscan": 0.99,
    "hnsw": 0.99,
    "ivfpq": 0.90,
    "ivfpq-rflat": 0.99,
}
KINDS_FOR = {
    "l2": ["flat", "ivf", "ivf-fastscan", "hnsw", "ivfpq", "ivfpq-rflat"],
    "cosine": ["flat", "ivf", "ivf-fastscan", "hnsw", "ivfpq", "ivfpq-rflat"],
    "l1": ["flat", "ivf", "hnsw"],  # faiss has no L1 for quantized codes
}
CASES = [(kind, metric) for metric, kinds in KINDS_FOR.items() for kind in kinds]


@pytest.fixture(scope="module")
def built(gallery) -> Callable[[str, str], VectorIndex]:
    """Lazily build (and cache) one trained, filled index per (kind, metric)."""
    cache: dict[tuple[str, str], VectorIndex] = {}

    def get(kind: str, metric: str) -> VectorIndex:
        if (kind, metric) not in cache:
            index = VectorIndex.create(choose_factory(N, DIM, kind), DIM, metric)
            index.train(gallery.vectors)
            index.add(gallery.vectors, gallery.ids)
            cache[kind, metric] = index
        return cache[kind, metric]

    return get


def np_distances(metric: str, q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reference distances (nq, nx) computed in float64 with plain numpy."""
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        return np.sqrt(((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1))
    if metric == "l1":
        return np.abs(q64[:, None, :] - x64[None, :, :]).sum(-1)
    qn = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
    xn = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    return 1.0 - qn @ xn.T


# --------------------------------------------------------------------------- recall


@pytest.mark.parametrize(("kind", "metric"), CASES)
def test_recall_at_1_against_exact_flat(built, gallery, kind: str, metric: str) -> None:
    index = built(kind, metric)
    assert index.ntotal == N
    _, labels = index.search(gallery.queries, 1)
    recall = float(np.mean(labels[:, 0] == gallery.exact_top1(metric)))
    assert recall >= RECALL_BOUND[kind], f"{kind}/{metric}: recall@1={recall:.3f}"


def test_nprobe_per_call_changes_ivf_search_without_mutating_it(hard_gallery) -> None:
    index = VectorIndex.create(choose_factory(N, DIM, "ivf"), DIM, "l2")
    index.train(hard_gallery.vectors)
    index.add(hard_gallery.vectors, hard_gallery.ids)
    truth = hard_gallery.exact_top1("l2")
    default = index.info()["nprobe"]

    def recall(**kw) -> float:
        return float(np.mean(index.search(hard_gallery.queries, 1, **kw)[1][:, 0] == truth))

    assert recall(nprobe=1) < 0.8  # overlapping clusters: one list is not enough
    assert recall(nprobe=index.nlist) == 1.0  # scanning every list is exhaustive
    assert index.info()["nprobe"] == default


def test_ef_search_is_passed_through_idmap_to_hnsw(hard_gallery) -> None:
    index = VectorIndex.create("HNSW32,Flat", DIM, "l2")  # auto-wrapped in IDMap2
    assert index.factory == "IDMap2,HNSW32,Flat"
    index.add(hard_gallery.vectors, hard_gallery.ids)
    truth = hard_gallery.exact_top1("l2")

    def recall(**kw) -> float:
        return float(np.mean(index.search(hard_gallery.queries, 1, **kw)[1][:, 0] == truth))

    low, high = recall(ef_search=1), recall(ef_search=256)
    assert low < 0.9 < 0.99 <= high
    assert index.info()["ef_search"] == 64


# --------------------------------------------------------------------------- distances


@pytest.mark.parametrize(
    ("kind", "metric"),
    [c for c in CASES if c[0] != "ivfpq"],  # IVF-PQ distances are PQ estimates by design
)
def test_distances_match_numpy_in_model_metric(built, gallery, kind: str, metric: str) -> None:
    index = built(kind, metric)
    q = gallery.queries[:50]
    dist, labels = index.search(q, 5)
    assert dist.dtype == np.float32 and labels.dtype == np.int64
    assert np.all(np.diff(dist, axis=1) >= -1e-6), "distances must be ascending"
    rows = (labels - 1000) // 7  # ids were 1000 + 7 * row
    ref = np_distances(metric, q, gallery.vectors)
    expected = np.take_along_axis(ref, rows, axis=1)
    np.testing.assert_allclose(dist, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "cosine", "l1"])
def test_flat_distances_on_unnormalised_vectors(rng, metric: str) -> None:
    x = (rng.standard_normal((300, 16)) * 3).astype(np.float32)
    q = (rng.standard_normal((20, 16)) * 3).astype(np.float32)
    ids = np.arange(300, dtype=np.int64) + 10**12  # large primary keys survive
    index = VectorIndex.create("Flat", 16, metric)
    index.add(x, ids)
    dist, labels = index.search(q, 300)
    ref = np_distances(metric, q, x)
    expected = np.take_along_axis(ref, labels - 10**12, axis=1)
    np.testing.assert_allclose(dist, expected, rtol=1e-4, atol=1e-4)
    # Exhaustive and ascending: the order equals numpy's sort (up to float ties).
    np.testing.assert_allclose(dist, np.sort(ref, axis=1), rtol=1e-4, atol=1e-4)
    if metric == "cosine":
        assert dist.min() >= 0.0 and dist.max() <= 2.0


def test_cosine_is_scale_invariant(rng) -> None:
    x = rng.standard_normal((100, 8)).astype(np.float32)
    index = VectorIndex.create("Flat", 8, "cosine")
    index.add(x, np.arange(100, dtype=np.int64))
    d1, i1 = index.search(x[:5], 3)
    d2, i2 = index.search(np.ascontiguousarray(x[:5] * 42.0), 3)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, atol=1e-6)
    assert np.all(i1[:, 0] == np.arange(5)) and np.allclose(d1[:, 0], 0.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("metric", ["l2", "cosine", "l1"])
def test_minus_one_sentinel_when_k_exceeds_ntotal(rng, kind: str, metric: str) -> None:
    x = rng.standard_normal((3, 8)).astype(np.float32)
    factory = "IVF1,Flat" if kind == "ivf" else choose_factory(3, 8, kind)
    index = VectorIndex.create(factory, 8, metric)
    index.train(x)
    index.add(x, np.array([5, 6, 7], dtype=np.int64))
    dist, labels = index.search(x[:2], 5)
    assert labels.shape == (2, 5)
    assert set(labels[0, :3]) == {5, 6, 7}
    assert np.all(labels[:, 3:] == -1)
    assert np.all(np.isinf(dist[:, 3:])) and np.all(dist[:, 3:] > 0)
    assert np.all(np.isfinite(dist[:, :3]))


def test_search_on_empty_index_and_empty_queries() -> None:
    index = VectorIndex.create("Flat", 4, "l2")
    dist, labels = index.search(np.zeros((2, 4), np.float32), 3)
    assert np.all(labels == -1) and np.all(np.isinf(dist))
    dist, labels = index.search(np.zeros((0, 4), np.float32), 3)
    assert dist.shape == (0, 3) and labels.shape == (0, 3)


# --------------------------------------------------------------------------- ids, add, remove


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf-fastscan", "hnsw", "ivfpq", "ivfpq-rflat"])
def test_ids_lists_every_stored_id(built, gallery, kind: str) -> None:
    index = built(kind, "l2")
    ids = index.ids()
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(np.sort(ids), np.sort(gallery.ids))


@pytest.mark.parametrize(
    "factory",
    [
        "IDMap2,Flat",
        "IVF4,Flat",
        "IDMap2,HNSW16,Flat",
        "IDMap2,IVF4,PQ4np,RFlat",
        "IDMap2,IVF4,PQ8x4fs,RFlat",
    ],
)
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_add_and_remove_by_ids(rng, factory: str, metric: str) -> None:
    x = rng.standard_normal((400, 16)).astype(np.float32)
    ids = rng.choice(10**9, size=400, replace=False).astype(np.int64)
    index = VectorIndex.create(factory, 16, metric)
    index.train(x)
    index.add(x[:300], ids[:300])
    index.add(x[300:], ids[300:])
    assert index.ntotal == 400

    gone = ids[::4]
    assert index.remove(np.concatenate([gone, np.array([123], np.int64)])) == len(gone)
    assert index.ntotal == 400 - len(gone)
    assert set(index.ids().tolist()) == set(ids.tolist()) - set(gone.tolist())

    # Removed vectors are no longer found; kept ones still find themselves.
    _, labels = index.search(x[::4], 1, nprobe=4)
    assert not np.isin(labels, gone).any()
    _, labels = index.search(x[1::4], 1, nprobe=4)
    assert np.mean(labels[:, 0] == ids[1::4]) >= 0.95

    # An id can be re-added once removed, but never twice.
    index.add(x[:1], ids[:1])
    with pytest.raises(DuplicateIdError):
        index.add(x[1:2], ids[1:2])
    assert index.remove(np.empty(0, np.int64)) == 0


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_refine_removal_in_place_answers_as_a_fresh_build(tmp_path, gallery, metric) -> None:
    """IDMap2 over IndexRefine(IVF fast-scan, Flat) removes in place (faiss cannot): the
    answers are those of an index built without the removed ids, with exact distances, and
    the index saves, loads and takes the ids again."""
    factory = choose_factory(N, DIM, "ivf-fastscan")
    rng = np.random.default_rng(5)
    gone = rng.choice(gallery.ids, size=N // 5, replace=False)
    kept = ~np.isin(gallery.ids, gone)
    index = VectorIndex.create(factory, DIM, metric)
    index.train(gallery.vectors)
    index.add(gallery.vectors, gallery.ids)
    assert index.remove(np.append(gone, np.int64(10**12))) == gone.size
    fresh = VectorIndex.create(factory, DIM, metric)
    fresh.train(gallery.vectors)
    fresh.add(gallery.vectors[kept], gallery.ids[kept])
    assert index.ntotal == fresh.ntotal == int(kept.sum())
    np.testing.assert_array_equal(np.sort(index.ids()), np.sort(gallery.ids[kept]))

    queries = gallery.vectors[::7] + np.float32(0.01)
    dist, labels = index.search(queries, 10)
    fresh_dist, fresh_labels = fresh.search(queries, 10)
    assert not np.isin(labels, gone).any()
    assert np.mean(labels[:, 0] == fresh_labels[:, 0]) >= 0.99
    np.testing.assert_allclose(dist[:, 0], fresh_dist[:, 0], atol=1e-5)
    rows = {int(i): r for r, i in enumerate(gallery.ids)}
    nearest = gallery.vectors[[rows[int(i)] for i in labels[:, 0]]]
    exact = np.diag(np_distances(metric, queries, nearest))
    np.testing.assert_allclose(dist[:, 0], exact, atol=1e-4)

    loaded = VectorIndex.load(tmp_path / "r.faiss", index.save(tmp_path / "r.faiss"))
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], labels)
    loaded.add(gallery.vectors[~kept][:50], gallery.ids[~kept][:50])
    assert loaded.ntotal == int(kept.sum()) + 50
    again = loaded.search(gallery.vectors[~kept][:50], 1)[1][:, 0]
    assert np.mean(again == gallery.ids[~kept][:50]) >= 0.95


def test_duplicate_ids_within_a_batch_are_rejected(rng) -> None:
    index = VectorIndex.create("Flat", 4, "l2")
    with pytest.raises(DuplicateIdError, match=r"\[3\]"):
        index.add(rng.standard_normal((3, 4)).astype(np.float32), np.array([3, 3, 4], np.int64))
    assert index.ntotal == 0


def test_remove_after_load_still_checks_duplicates(tmp_path, rng) -> None:
    x = rng.standard_normal((10, 4)).astype(np.float32)
    index = VectorIndex.create("IVF2,Flat", 4, "l2")
    index.train(x)
    index.add(x, np.arange(10, dtype=np.int64))
    loaded = VectorIndex.load(tmp_path / "i.faiss", index.save(tmp_path / "i.faiss"))
    with pytest.raises(DuplicateIdError):
        loaded.add(x[:1], np.array([9], np.int64))
    loaded.add(x[:1], np.array([10], np.int64))
    assert loaded.ntotal == 11


# --------------------------------------------------------------------------- validation


def test_dimension_mismatch_names_both_dims(rng) -> None:
    index = VectorIndex.create("Flat", 64, "l2")
    with pytest.raises(DimensionMismatchError, match="128.*64") as info:
        index.add(rng.standard_normal((2, 128)).astype(np.float32), np.arange(2, dtype=np.int64))
    assert (info.value.expected, info.value.got) == (64, 128)
    assert isinstance(info.value, VectorIndexError) and isinstance(info.value, ValueError)
    with pytest.raises(DimensionMismatchError):
        index.search(np.zeros((1, 32), np.float32), 1)


def test_input_validation_messages(rng) -> None:
    index = VectorIndex.create("Flat", 8, "cosine")
    x = rng.standard_normal((4, 8))
    ids = np.arange(4, dtype=np.int64)
    with pytest.raises(InvalidInputError, match="float32"):
        index.add(x, ids)  # float64
    x32 = x.astype(np.float32)
    with pytest.raises(InvalidInputError, match="C-contiguous"):
        index.add(np.asfortranarray(x32), ids)
    with pytest.raises(InvalidInputError, match=r"x\[None, :\]"):
        index.search(x32[0], 1)
    with pytest.raises(InvalidInputError, match="int64"):
        index.add(x32, ids.astype(np.int32))
    with pytest.raises(InvalidInputError, match="sentinel"):
        index.add(x32, np.array([0, 1, 2, -1], np.int64))
    with pytest.raises(InvalidInputError, match="4 vectors but 3 ids"):
        index.add(x32, ids[:3])
    bad = x32.copy()
    bad[2, 3] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        index.add(bad, ids)
    zero = x32.copy()
    zero[1] = 0
    with pytest.raises(InvalidInputError, match="non-zero"):
        index.add(zero, ids)
    with pytest.raises(InvalidInputError, match="k must be"):
        index.search(x32, 0)
    with pytest.raises(InvalidInputError, match="nprobe"):
        index.search(x32, 1, nprobe=0)
    assert index.ntotal == 0


def test_ivf_requires_training(rng) -> None:
    index = VectorIndex.create("IVF16,Flat", 8, "l2")
    assert not index.is_trained
    x = rng.standard_normal((8, 8)).astype(np.float32)
    with pytest.raises(IndexNotTrainedError, match="train"):
        index.add(x, np.arange(8, dtype=np.int64))
    with pytest.raises(IndexNotTrainedError):
        index.search(x, 1)
    with pytest.raises(TrainingDataError, match="at least 16"):
        index.train(x)


def test_training_sample_is_capped_and_seeded(rng) -> None:
    x = rng.standard_normal((3_000, 8)).astype(np.float32)
    a = VectorIndex.create("IVF8,Flat", 8, "l2")
    b = VectorIndex.create("IVF8,Flat", 8, "l2")
    a.train(x, max_points=500, seed=7)
    b.train(x, max_points=500, seed=7)
    ca = a.faiss_index.quantizer.reconstruct_n(0, 8)
    cb = b.faiss_index.quantizer.reconstruct_n(0, 8)
    np.testing.assert_array_equal(ca, cb)
    a.train(x)  # already trained: no-op
    np.testing.assert_array_equal(a.faiss_index.quantizer.reconstruct_n(0, 8), ca)


def test_pq_without_enough_training_points(rng) -> None:
    index = VectorIndex.create("IVF2,PQ4np", 8, "l2")
    with pytest.raises(TrainingDataError, match="more training vectors"):
        index.train(rng.standard_normal((100, 8)).astype(np.float32))


@pytest.mark.parametrize(
    "factory",
    [
        "IVF16,PQ4np",
        "IDMap2,IVF16,PQ4np,RFlat",
        "HNSW32,SQ8",  # would abort the whole process inside faiss if not refused
        "IVF16,SQ8",
        "PQ4",
    ],
)
def test_l1_refused_for_quantized_codes(factory: str) -> None:
    with pytest.raises(UnsupportedIndexError, match="l1"):
        VectorIndex.create(factory, 16, "l1")


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW32,Flat", "IVF16_HNSW8,Flat"])
def test_l1_accepted_for_flat_codes(factory: str) -> None:
    assert VectorIndex.create(factory, 16, "l1").metric == "l1"


def test_bad_metric_and_factory() -> None:
    with pytest.raises(UnsupportedIndexError, match="metric"):
        VectorIndex.create("Flat", 8, "hamming")
    with pytest.raises(UnsupportedIndexError, match="index_factory"):
        VectorIndex.create("NotAnIndex", 8, "l2")
    with pytest.raises(InvalidInputError):
        VectorIndex.create("Flat", 0, "l2")


def test_duplicates_detected_across_many_small_adds(rng) -> None:
    index = VectorIndex.create("IVF2,Flat", 4, "l2")
    x = rng.standard_normal((20, 4)).astype(np.float32)
    index.train(x)
    order = rng.permutation(20).astype(np.int64)
    for chunk in np.array_split(order, 5):  # ids arrive unsorted, in small batches
        index.add(np.ascontiguousarray(x[chunk]), chunk)
    for i in order:
        with pytest.raises(DuplicateIdError):
            index.add(x[:1], np.array([i], np.int64))
    assert index.ntotal == 20


def test_create_parameters(rng) -> None:
    index = VectorIndex.create("IVF8,Flat", 4, "l2", nprobe=3)
    assert index.info()["nprobe"] == 3
    hnsw = VectorIndex.create("HNSW8,Flat", 4, "l2", ef_search=20, ef_construction=100)
    assert hnsw.info()["ef_search"] == 20
    refine = VectorIndex.create("IVF8,PQ2np,RFlat", 4, "l2", k_factor=8)
    assert refine.info()["k_factor"] == 8.0
    with pytest.raises(InvalidInputError):
        VectorIndex.create("IVF8,Flat", 4, "l2", nprobe=0)
    with pytest.raises(InvalidInputError):
        VectorIndex.create("IVF8,PQ2np,RFlat", 4, "l2", k_factor=-1.0)


@pytest.mark.parametrize("factory", ["IVF16,PQ16x4fs", "IDMap2,IVF16,PQ16x4fs,RFlat"])
def test_vectors_added_after_a_removal_are_found_in_fast_scan_lists(rng, factory) -> None:
    """faiss leaves removed 4-bit codes in the freed slots of a packed block and ORs the
    next codes added there into them; VectorIndex.remove clears them."""
    x = rng.standard_normal((5_000, 64)).astype(np.float32)
    ids = np.arange(5_000, dtype=np.int64)
    index = VectorIndex.create(factory, 64, "l2", nprobe=16)
    index.train(x)
    index.add(x, ids)
    gone = np.sort(rng.choice(ids, size=1_000, replace=False))
    assert index.remove(gone) == 1_000
    index.add(x[gone[:100]], gone[:100] + 10_000)
    _, labels = index.search(x[gone[:100]], 1)
    assert np.mean(labels[:, 0] == gone[:100] + 10_000) == 1.0
