"""choose_factory: structure choice by gallery size and kind."""

from __future__ import annotations

import math

import pytest

from index import (
    FLAT_MAX_N,
    UnsupportedIndexError,
    VectorIndex,
    choose_factory,
    default_nprobe,
    nlist_for,
    pq_m_for,
)


def test_auto_small_gallery_is_exact_flat() -> None:
    assert choose_factory(0, 128) == "IDMap2,Flat"
    assert choose_factory(1_000, 128) == "IDMap2,Flat"
    assert choose_factory(FLAT_MAX_N - 1, 512) == "IDMap2,Flat"


def test_auto_large_gallery_is_ivf_fastscan_reranked_with_4_sqrt_n_lists() -> None:
    nlist = round(4 * math.sqrt(FLAT_MAX_N))
    assert choose_factory(FLAT_MAX_N, 128) == f"IDMap2,IVF{nlist},PQ32x4fs,RFlat"
    assert choose_factory(1_000_000, 512, metric="cosine") == "IDMap2,IVF4000,PQ64x4fs,RFlat"
    nlist = round(4 * math.sqrt(10_000_000))
    assert choose_factory(10_000_000, 64) == f"IDMap2,IVF{nlist},PQ16x4fs,RFlat"


def test_auto_large_l1_gallery_keeps_flat_lists() -> None:
    # faiss computes L1 only on uncompressed codes
    assert choose_factory(1_000_000, 512, metric="l1") == "IVF4000,Flat"
    VectorIndex.create(choose_factory(FLAT_MAX_N, 8, metric="l1"), 8, "l1")


def test_explicit_kinds() -> None:
    assert choose_factory(10, 64, "flat") == "IDMap2,Flat"
    assert choose_factory(10, 64, "HNSW") == "IDMap2,HNSW32,Flat"
    assert choose_factory(1_000_000, 64, "ivf") == "IVF4000,Flat"
    assert choose_factory(1_000_000, 64, "ivf-fastscan") == "IDMap2,IVF4000,PQ16x4fs,RFlat"
    assert choose_factory(1_000_000, 64, "ivfpq") == "IVF4000,PQ16np"
    assert choose_factory(1_000_000, 512, "ivfpq") == "IVF4000,PQ64np"
    assert choose_factory(1_000_000, 64, "ivfpq-rflat") == "IDMap2,IVF4000,PQ16np,RFlat"


def test_explicit_factory_string_returned_as_is() -> None:
    assert choose_factory(10, 64, "IVF7,SQ8") == "IVF7,SQ8"
    assert choose_factory(10, 64, "OPQ16_64,IVF256,PQ16") == "OPQ16_64,IVF256,PQ16"
    with pytest.raises(ValueError):
        choose_factory(10, 64, "  ")


def test_nlist_is_capped_so_kmeans_has_39_points_per_centroid() -> None:
    # 4*sqrt(5000) = 283 lists would leave ~18 points per centroid.
    assert nlist_for(5_000) == 5_000 // 39
    assert nlist_for(10) == 1
    assert nlist_for(1_000_000) == 4_000
    for n in (1, 100, 5_000, 25_000, 50_000, 2_000_000):
        assert 1 <= nlist_for(n) <= max(1, n // 39)


@pytest.mark.parametrize("dim", [7, 32, 64, 100, 128, 256, 512, 1024])
def test_pq_m_divides_dim(dim: int) -> None:
    m = pq_m_for(dim)
    assert dim % m == 0
    assert 1 <= m <= 64


def test_default_nprobe_bounds() -> None:
    assert default_nprobe(1) == 1
    assert default_nprobe(5) == 5
    assert default_nprobe(128) == 24
    assert default_nprobe(4_000) == 128


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        choose_factory(-1, 64)
    with pytest.raises(ValueError):
        choose_factory(10, 0)


@pytest.mark.parametrize("kind", ["auto", "flat", "ivf", "ivfpq", "ivfpq-rflat", "hnsw"])
@pytest.mark.parametrize("n", [1_000, 100_000])
def test_every_choice_is_buildable(kind: str, n: int) -> None:
    index = VectorIndex.create(choose_factory(n, 64, kind), 64, "l2")
    assert index.dim == 64 and index.ntotal == 0


def test_unknown_factory_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedIndexError, match="choose_factory"):
        VectorIndex.create(choose_factory(10, 64, "hsnw"), 64, "l2")
