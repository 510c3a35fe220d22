"""VectorStore: durable float32 shards addressed by '<shard>#<row>' refs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from index import (
    DimensionMismatchError,
    InvalidInputError,
    ShardCorruptError,
    VectorIndex,
    VectorRefError,
    VectorStore,
    VectorStoreError,
    parse_ref,
)

DIM = 8


def _batch(rng, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.arange(start, start + n, dtype=np.int64),
        rng.standard_normal((n, DIM)).astype(np.float32),
    )


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_write_read_round_trip_and_stable_refs(tmp_path, rng) -> None:
    store = VectorStore(tmp_path / "model-v1", DIM)
    assert store.shard_names() == [] and store.read([]).shape == (0, DIM)
    ids_a, vec_a = _batch(rng, 5)
    ids_b, vec_b = _batch(rng, 3, start=100)
    refs_a = store.write_shard(ids_a, vec_a)
    refs_b = store.write_shard(ids_b, vec_b)
    assert len(refs_a) == 5 and len(refs_b) == 3
    assert [parse_ref(r)[1] for r in refs_a] == list(range(5))
    assert store.shard_names() == sorted({parse_ref(r)[0] for r in refs_a + refs_b})

    # Mixed shards, arbitrary order, repeats.
    refs = [refs_b[2], refs_a[0], refs_a[4], refs_b[0], refs_a[0]]
    expected = np.stack([vec_b[2], vec_a[0], vec_a[4], vec_b[0], vec_a[0]])
    np.testing.assert_array_equal(store.read(refs), expected)

    # A fresh instance (another process, later) resolves the same refs to the same vectors.
    again = VectorStore(tmp_path / "model-v1", DIM)
    np.testing.assert_array_equal(again.read(refs_a), vec_a)
    shards = list(again.iter_shards())
    assert [s.name for s in shards] == again.shard_names()
    np.testing.assert_array_equal(shards[0].ids, ids_a)
    np.testing.assert_array_equal(shards[0].vectors, vec_a)
    assert shards[1].refs() == refs_b
    assert store.validate().ok and store.validate(deep=True).vectors_checked == 8


def test_empty_batch_writes_nothing(tmp_path) -> None:
    store = VectorStore(tmp_path, DIM)
    assert store.write_shard(np.empty(0, np.int64), np.empty((0, DIM), np.float32)) == []
    assert store.shard_names() == []


def test_input_validation(tmp_path, rng) -> None:
    store = VectorStore(tmp_path, DIM)
    ids, vec = _batch(rng, 4)
    with pytest.raises(DimensionMismatchError, match="8-dimensional"):
        store.write_shard(ids, rng.standard_normal((4, 16)).astype(np.float32))
    with pytest.raises(InvalidInputError, match="float32"):
        store.write_shard(ids, vec.astype(np.float64))
    with pytest.raises(InvalidInputError, match="int64"):
        store.write_shard(ids.astype(np.int32), vec)
    with pytest.raises(InvalidInputError, match="4 vectors but 3 ids"):
        store.write_shard(ids[:3], vec)
    vec[0, 0] = np.inf
    with pytest.raises(InvalidInputError, match="NaN/inf"):
        store.write_shard(ids, vec)
    assert list(tmp_path.iterdir()) == []


def test_store_dim_is_pinned_by_manifest(tmp_path, rng) -> None:
    VectorStore(tmp_path, DIM).write_shard(*_batch(rng, 2))
    with pytest.raises(DimensionMismatchError, match="holds 8-dimensional"):
        VectorStore(tmp_path, 16)


def test_bad_refs(tmp_path, rng) -> None:
    store = VectorStore(tmp_path, DIM)
    refs = store.write_shard(*_batch(rng, 2))
    name = parse_ref(refs[0])[0]
    for bad in ["nonsense", f"{name}#", f"{name}#-1", "../../etc/passwd#0", f"{name}/x#1"]:
        with pytest.raises(VectorRefError, match="malformed"):
            store.read([bad])
        with pytest.raises(VectorRefError, match="malformed"):  # after a good ref of its shard
            store.read([refs[0], bad])
    with pytest.raises(VectorRefError, match="past the end"):
        store.read([f"{name}#2"])
    missing = "shard-00000000000000000001-0123456789ab#0"
    with pytest.raises(VectorRefError, match="does not exist"):
        store.read([missing])
    assert isinstance(VectorRefError("x"), LookupError)


def test_tmp_leftovers_and_incomplete_shards_are_ignored_then_cleaned(tmp_path, rng) -> None:
    store = VectorStore(tmp_path, DIM)
    refs = store.write_shard(*_batch(rng, 3))
    # Simulate crashes: a half-written tmp file, and a shard whose ids were committed but
    # whose vectors file (the commit marker) never made it.
    tmp = tmp_path / ".shard-00000000000000000002-aaaaaaaaaaaa.f32.npy.tmp-deadbeef"
    tmp.write_bytes(b"\x93NUMPY half")
    incomplete = "shard-00000000000000000003-bbbbbbbbbbbb"
    np.save(tmp_path / f"{incomplete}.ids.npy", np.arange(3, dtype=np.int64))

    assert store.shard_names() == [parse_ref(refs[0])[0]]
    assert len(list(store.iter_shards())) == 1
    report = store.validate()
    assert report.ok  # crash debris is not an error...
    assert {p.kind for p in report.problems} == {"tmp_leftover", "incomplete"}

    assert store.clean_partial() == []  # ...and fresh debris may belong to a live writer
    for p in tmp_path.iterdir():
        _age(p, 7200)
    cleaned = {p.name for p in store.clean_partial()}
    assert cleaned == {tmp.name, f"{incomplete}.ids.npy"}
    assert store.validate().problems == []
    np.testing.assert_array_equal(store.read(refs), store.read(refs))  # committed data intact


def test_orphan_shards_found_and_removed(tmp_path, rng) -> None:
    store = VectorStore(tmp_path, DIM)
    committed = store.write_shard(*_batch(rng, 4))
    orphan = parse_ref(store.write_shard(*_batch(rng, 2, start=50))[0])[0]
    # SQL only references the first shard (the second one's transaction "crashed").
    assert store.find_orphans(committed) == []  # too young: writer may still commit
    assert store.find_orphans(committed, min_age_s=0) == [orphan]
    assert store.remove_shards([orphan]) == [orphan]
    assert store.remove_shards([orphan]) == []  # idempotent
    assert store.shard_names() == [parse_ref(committed[0])[0]]
    assert store.read(committed).shape == (4, DIM)
    with pytest.raises(VectorRefError):
        store.remove_shards(["../store.json"])


def test_committed_shards_are_never_overwritten(tmp_path, rng) -> None:
    store = VectorStore(tmp_path, DIM)
    refs = store.write_shard(*_batch(rng, 2))
    name = parse_ref(refs[0])[0]
    before = (tmp_path / f"{name}.f32.npy").read_bytes()
    with pytest.raises(VectorStoreError, match="immutable"):
        store._write_npy(tmp_path / f"{name}.f32.npy", np.zeros((2, DIM), np.float32))
    assert (tmp_path / f"{name}.f32.npy").read_bytes() == before
    assert [p for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_validate_reports_corrupt_and_foreign_shards(tmp_path, rng) -> None:
    store = VectorStore(tmp_path, DIM)
    good = store.write_shard(*_batch(rng, 3))
    bad_dim = "shard-00000000000000000005-cccccccccccc"
    np.save(tmp_path / f"{bad_dim}.ids.npy", np.arange(2, dtype=np.int64))
    np.save(tmp_path / f"{bad_dim}.f32.npy", np.zeros((2, 4), np.float32))
    truncated = parse_ref(store.write_shard(*_batch(rng, 50))[0])[0]
    path = tmp_path / f"{truncated}.f32.npy"
    path.write_bytes(path.read_bytes()[:200])

    report = store.validate()
    assert not report.ok
    kinds = {p.name: p.kind for p in report.errors}
    assert kinds == {bad_dim: "dim_mismatch", truncated: "corrupt"}
    with pytest.raises(DimensionMismatchError):
        store.read([f"{bad_dim}#0"])
    with pytest.raises(ShardCorruptError, match="remove_shards"):
        store.read([f"{truncated}#0"])
    assert store.read(good).shape == (3, DIM)


def test_index_can_be_rebuilt_from_the_store(tmp_path, rng) -> None:
    store = VectorStore(tmp_path, DIM)
    for start in (0, 1_000, 2_000):
        store.write_shard(*_batch(rng, 100, start=start))
    index = VectorIndex.create("Flat", DIM, "cosine")
    for shard in store.iter_shards():
        index.add(shard.vectors, shard.ids)  # memmapped rows go straight to faiss
    assert index.ntotal == 300
    first = next(store.iter_shards())
    _, labels = index.search(np.ascontiguousarray(first.vectors[:5]), 1)
    np.testing.assert_array_equal(labels[:, 0], first.ids[:5])
