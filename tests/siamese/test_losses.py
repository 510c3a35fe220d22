"""Contrastive losses against hand-written loops over pairs, plus gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from siamese.distances import get_distance
from siamese.losses import (
    ChopraContrastiveLoss,
    HadsellContrastiveLoss,
    PairBCELoss,
    build_loss,
)

from .test_distances import hand_distance

DISTANCES = ["l1", "l2", "cosine"]


def hadsell_loop(a: torch.Tensor, b: torch.Tensor, same: list[bool], name: str, m: float) -> float:
    """Hadsell et al. 2006, eq. 4 with Y = 0 for genuine pairs, pair by pair."""
    total = 0.0
    for i, s in enumerate(same):
        d = hand_distance(a[i].tolist(), b[i].tolist(), name)
        y = 0.0 if s else 1.0
        total += (1 - y) * 0.5 * d**2 + y * 0.5 * max(0.0, m - d) ** 2
    return total / len(same)


def chopra_loop(a: torch.Tensor, b: torch.Tensor, same: list[bool], name: str, q: float) -> float:
    """Chopra et al. 2005, eq. 8 with Y = 0 for genuine pairs, pair by pair."""
    total = 0.0
    for i, s in enumerate(same):
        e = hand_distance(a[i].tolist(), b[i].tolist(), name)
        y = 0.0 if s else 1.0
        total += (1 - y) * (2.0 / q) * e**2 + y * 2.0 * q * math.exp(-2.77 * e / q)
    return total / len(same)


def pairs(seed: int, n: int = 10, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, dim, generator=g, dtype=torch.float64) * 0.6
    b = torch.randn(n, dim, generator=g, dtype=torch.float64) * 0.6
    same = torch.rand(n, generator=g) < 0.5
    same[0], same[1] = True, False  # both kinds present
    return a, b, same


@pytest.mark.parametrize("name", DISTANCES)
@pytest.mark.parametrize("margin", [0.3, 1.0, 2.5])
def test_hadsell_matches_loop(name: str, margin: float) -> None:
    a, b, same = pairs(0)
    loss = HadsellContrastiveLoss(get_distance(name), margin)(a, b, same)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(hadsell_loop(a, b, same.tolist(), name, margin), rel=1e-9)


@pytest.mark.parametrize("name", DISTANCES)
@pytest.mark.parametrize("q", [0.5, 2.0, 8.0])
def test_chopra_matches_loop(name: str, q: float) -> None:
    a, b, same = pairs(1)
    loss = ChopraContrastiveLoss(get_distance(name), q)(a, b, same)
    assert loss.item() == pytest.approx(chopra_loop(a, b, same.tolist(), name, q), rel=1e-9)


@pytest.mark.parametrize("name", DISTANCES)
def test_hadsell_positive_margin_matches_loop(name: str) -> None:
    a, b, same = pairs(4)
    m, p = 1.5, 0.4
    loss = HadsellContrastiveLoss(get_distance(name), m, positive_margin=p)(a, b, same)
    total = 0.0
    for i, s in enumerate(same.tolist()):
        d = hand_distance(a[i].tolist(), b[i].tolist(), name)
        total += 0.5 * max(0.0, d - p) ** 2 if s else 0.5 * max(0.0, m - d) ** 2
    assert loss.item() == pytest.approx(total / len(same), rel=1e-9)


def test_label_convention_same_true_pulls_together() -> None:
    d = torch.tensor([0.0, 0.0])
    loss = HadsellContrastiveLoss(get_distance("l2"), margin=1.0)
    # Identical embeddings cost nothing if they are the same person, and the full
    # margin penalty m^2 / 2 if they are different people.
    assert loss.from_distance(d, torch.tensor([True, True])).item() == 0.0
    assert loss.from_distance(d, torch.tensor([False, False])).item() == pytest.approx(0.5)
    chopra = ChopraContrastiveLoss(get_distance("l1"), q=2.0)
    assert chopra.from_distance(d, torch.tensor([True, True])).item() == 0.0
    assert chopra.from_distance(d, torch.tensor([False, False])).item() == pytest.approx(4.0)


def test_impostors_beyond_margin_cost_nothing() -> None:
    loss = HadsellContrastiveLoss(get_distance("l2"), margin=0.5)
    assert loss.from_distance(torch.tensor([0.7, 1.2]), torch.tensor([False, False])).item() == 0.0


def _far_from_kinks(a: torch.Tensor, b: torch.Tensor, name: str, margin: float) -> bool:
    d = get_distance(name)(a, b)
    # L1 has a kink wherever a coordinate difference is 0; Hadsell where D = m.
    coord_ok = (a - b).abs().min() > 1e-3
    return bool(coord_ok and (d - margin).abs().min() > 1e-3 and d.min() > 1e-3)


@pytest.mark.parametrize("name", DISTANCES)
def test_hadsell_gradcheck(name: str) -> None:
    margin = 1.2 if name != "cosine" else 0.9
    a, b, same = pairs(2, n=6, dim=3)
    assert _far_from_kinks(a, b, name, margin)
    loss = HadsellContrastiveLoss(get_distance(name), margin)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert gradcheck(lambda x, y: loss(x, y, same), (a, b), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", DISTANCES)
def test_chopra_gradcheck(name: str) -> None:
    a, b, same = pairs(3, n=6, dim=3)
    assert _far_from_kinks(a, b, name, margin=-1.0)
    loss = ChopraContrastiveLoss(get_distance(name), q=2.0)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert gradcheck(lambda x, y: loss(x, y, same), (a, b), eps=1e-6, atol=1e-5)


def test_bce_matches_loop() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    same = torch.tensor([True, False, False])
    want = (
        -(
            math.log(1 / (1 + math.exp(-2.0)))
            + math.log(1 - 1 / (1 + math.exp(1.0)))
            + math.log(1 - 1 / (1 + math.exp(-0.5)))
        )
        / 3
    )
    assert PairBCELoss()(logits, same).item() == pytest.approx(want, rel=1e-9)


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="margin"):
        HadsellContrastiveLoss(get_distance("l2"), margin=0.0)
    with pytest.raises(ValueError, match="positive_margin"):
        HadsellContrastiveLoss(get_distance("l2"), margin=1.0, positive_margin=1.0)
    with pytest.raises(ValueError, match="Q"):
        ChopraContrastiveLoss(get_distance("l2"), q=-1.0)
    with pytest.raises(ValueError, match="Distance"):
        HadsellContrastiveLoss("l2", 1.0)  # type: ignore[arg-type]
    loss = HadsellContrastiveLoss(get_distance("l2"))
    with pytest.raises(ValueError, match="bool"):
        loss(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        loss(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([True]))
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("triplet", get_distance("l2"), 1.0)
