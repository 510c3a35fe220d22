"""Shared fixtures for the index tests: seeded clustered unit vectors and exact ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import pytest

# The CI box has 2 shared cores; OpenMP oversubscription makes faiss much slower, not faster.
faiss.omp_set_num_threads(1)

DIM = 64
N_CLUSTERS = 200
PER_CLUSTER = 25
N_QUERIES = 500

FAISS_METRIC = {
    "l2": faiss.METRIC_L2,
    "cosine": faiss.METRIC_INNER_PRODUCT,
    "l1": faiss.METRIC_L1,
}


def unit(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a / np.linalg.norm(a, axis=1, keepdims=True), dtype=np.float32)


@dataclass(frozen=True)
class Gallery:
    vectors: np.ndarray  # (5000, 64) float32 unit norm
    ids: np.ndarray  # int64 "database primary keys" (not 0..n-1 on purpose)
    queries: np.ndarray  # perturbed members
    member_rows: np.ndarray  # row of the member each query was derived from

    def exact_top1(self, metric: str) -> np.ndarray:
        """Ground truth id of the nearest gallery vector per query (exact IndexFlat)."""
        flat = faiss.IndexFlat(DIM, FAISS_METRIC[metric])
        flat.add(self.vectors)  # vectors are unit norm, so IP == cosine
        _, rows = flat.search(self.queries, 1)
        return self.ids[rows[:, 0]]


def make_gallery(seed: int, spread: float) -> Gallery:
    """200 identities x 25 embeddings, d=64, unit norm; queries = perturbed members.

    ``spread`` is the per-dimension noise around each identity centre (0.05 -> intra-class
    cosine ~0.9, like a trained face model; 0.25 -> clusters overlap, a hard case for IVF).
    """
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((N_CLUSTERS, DIM)))
    n = N_CLUSTERS * PER_CLUSTER
    vectors = unit(np.repeat(centres, PER_CLUSTER, axis=0) + spread * rng.standard_normal((n, DIM)))
    ids = (np.arange(n, dtype=np.int64) * 7 + 1000).astype(np.int64)
    rows = rng.choice(n, size=N_QUERIES, replace=False)
    queries = unit(vectors[rows] + 0.4 * spread * rng.standard_normal((N_QUERIES, DIM)))
    return Gallery(vectors=vectors, ids=ids, queries=queries, member_rows=rows)


@pytest.fixture(scope="session")
def gallery() -> Gallery:
    return make_gallery(seed=1234, spread=0.05)


@pytest.fixture(scope="session")
def hard_gallery() -> Gallery:
    return make_gallery(seed=99, spread=0.25)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
