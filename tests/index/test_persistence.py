"""VectorIndex.save / load: atomic writes, checksums, actionable errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from index import (
    DimensionMismatchError,
    IndexChecksumError,
    IndexCorruptError,
    IndexFileMissingError,
    ReadOnlyIndexError,
    VectorIndex,
    VectorIndexError,
    choose_factory,
)


def _filled(kind: str, metric: str, rng: np.random.Generator, n: int = 2_000, dim: int = 16):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    ids = rng.choice(10**12, size=n, replace=False).astype(np.int64)
    index = VectorIndex.create(choose_factory(n, dim, kind), dim, metric, nprobe=5)
    index.train(x)
    index.add(x, ids)
    return index, x, ids


@pytest.mark.parametrize(
    ("kind", "metric"),
    [("flat", "l2"), ("flat", "l1"), ("ivf", "cosine"), ("hnsw", "l2"), ("ivfpq-rflat", "l2")],
)
def test_round_trip_with_checksum(tmp_path: Path, rng, kind: str, metric: str) -> None:
    index, x, ids = _filled(kind, metric, rng)
    path = tmp_path / "sub" / "gallery.faiss"
    digest = index.save(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["gallery.faiss"]  # no tmp left behind

    loaded = VectorIndex.load(path, digest, expected_dim=16)
    assert (loaded.dim, loaded.metric, loaded.ntotal) == (16, metric, len(ids))
    np.testing.assert_array_equal(np.sort(loaded.ids()), np.sort(ids))
    assert loaded.info().get("nprobe") == index.info().get("nprobe")  # persisted by faiss
    d0, i0 = index.search(x[:20], 4)
    d1, i1 = loaded.search(x[:20], 4)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_allclose(d0, d1)
    # The file does not store the factory string; the reverse-engineered one rebuilds the
    # same structure.
    rebuilt = VectorIndex.create(loaded.factory, 16, metric)
    assert rebuilt.factory == loaded.factory
    assert type(rebuilt.faiss_index) is type(loaded.faiss_index)


def test_checksum_is_case_insensitive_and_save_overwrites_atomically(tmp_path, rng) -> None:
    index, x, ids = _filled("flat", "l2", rng, n=50)
    path = tmp_path / "i.faiss"
    first = index.save(path)
    index.remove(ids[:10])
    second = index.save(path)
    assert first != second
    assert VectorIndex.load(path, second.upper()).ntotal == 40
    with pytest.raises(IndexChecksumError):
        VectorIndex.load(path, first)


def test_flipped_byte_is_a_checksum_error(tmp_path, rng) -> None:
    index, _, _ = _filled("flat", "l2", rng, n=100)
    path = tmp_path / "i.faiss"
    digest = index.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexChecksumError, match="siamid doctor --repair") as info:
        VectorIndex.load(path, digest)
    assert str(path) in str(info.value)
    assert isinstance(info.value, VectorIndexError)


def test_missing_file(tmp_path) -> None:
    path = tmp_path / "nope.faiss"
    with pytest.raises(IndexFileMissingError, match="siamid doctor --repair") as info:
        VectorIndex.load(path, "0" * 64)
    assert str(path) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_wrong_dimension(tmp_path, rng) -> None:
    index, _, _ = _filled("flat", "l2", rng, n=10)
    path = tmp_path / "i.faiss"
    index.save(path)
    with pytest.raises(DimensionMismatchError, match="16.*128") as info:
        VectorIndex.load(path, expected_dim=128)
    assert (info.value.expected, info.value.got) == (128, 16)


def test_truncated_file_without_checksum_is_corrupt(tmp_path, rng) -> None:
    index, _, _ = _filled("ivf", "l2", rng, n=500)
    path = tmp_path / "i.faiss"
    index.save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IndexCorruptError, match="siamid doctor --repair"):
        VectorIndex.load(path)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_mmap_load_is_searchable_and_read_only(tmp_path, rng, kind: str) -> None:
    index, x, ids = _filled(kind, "l2", rng, n=1_000)
    path = tmp_path / "i.faiss"
    digest = index.save(path)
    mapped = VectorIndex.load(path, digest, mmap=True)
    assert mapped.read_only
    np.testing.assert_array_equal(mapped.search(x[:10], 3)[1], index.search(x[:10], 3)[1])
    np.testing.assert_array_equal(np.sort(mapped.ids()), np.sort(ids))
    with pytest.raises(ReadOnlyIndexError, match="mmap=False"):
        mapped.add(x[:1], np.array([1], np.int64))
    with pytest.raises(ReadOnlyIndexError):
        mapped.remove(ids[:1])
