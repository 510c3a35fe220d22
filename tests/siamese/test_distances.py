"""Distances: row-wise, pairwise (torch and numpy) and the factory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from siamese.distances import (
    CosineDistance,
    L1Distance,
    L2Distance,
    get_distance,
    pairwise_distances,
)


def hand_distance(a: list[float], b: list[float], name: str) -> float:
    if name == "l1":
        return sum(abs(x - y) for x, y in zip(a, b, strict=True))
    if name == "l2":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return 1.0 - dot / (na * nb)


@pytest.mark.parametrize("name", ["l1", "l2", "cosine"])
def test_rowwise_matches_hand_formula(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64)
    b = torch.randn(6, 5, generator=g, dtype=torch.float64)
    got = get_distance(name)(a, b)
    want = [hand_distance(a[i].tolist(), b[i].tolist(), name) for i in range(6)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["l1", "l2", "cosine"])
def test_pairwise_matches_rowwise_and_numpy(name: str) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(7, 3))
    dist = get_distance(name)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    mat = dist.pairwise(ta, tb)
    assert mat.shape == (4, 7)
    for i in range(4):
        row = dist(ta[i].expand(7, 3), tb)
        np.testing.assert_allclose(mat[i].numpy(), row.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pairwise_distances(a, b, name), mat.numpy(), rtol=1e-12)
    assert pairwise_distances(a, b, name).dtype == np.float64


def test_identical_vectors_have_zero_distance_and_finite_gradient() -> None:
    a = torch.ones(2, 4, requires_grad=True)
    d = L2Distance()(a, a.detach().clone())
    assert torch.all(d < 1e-5)
    d.sum().backward()
    assert torch.all(torch.isfinite(a.grad))


def test_cosine_is_scale_invariant() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0]])
    assert CosineDistance()(a, 5 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert CosineDistance()(a, -a).item() == pytest.approx(2.0, abs=1e-6)


def test_factory_types_and_errors() -> None:
    assert isinstance(get_distance("l1"), L1Distance)
    assert isinstance(get_distance("l2"), L2Distance)
    assert isinstance(get_distance("cosine"), CosineDistance)
    for bad in ["L2", "euclidean", "", None]:
        with pytest.raises(ValueError, match="unknown distance"):
            get_distance(bad)  # type: ignore[arg-type]


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        L2Distance()(torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError):
        L1Distance().pairwise(torch.zeros(3, 2), torch.zeros(2, 3))
