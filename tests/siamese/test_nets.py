"""Pair networks: weight sharing, unshared branches, two-channel scoring and re-ranking."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import Tensor

from siamese.config import EncoderConfig
from siamese.encoder import Encoder
from siamese.nets import (
    PseudoSiameseNet,
    SiameseNet,
    TwoChannelNet,
    build_net,
    embedding_encoder,
    rerank,
)

CFG = EncoderConfig(input_size=(24, 20), widths=(4, 8), embedding_dim=6, dropout=0.0)


def _param_ids(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


def _grads(module: torch.nn.Module) -> list[Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def test_siamese_has_exactly_one_encoders_parameters() -> None:
    torch.manual_seed(0)
    net = SiameseNet.from_config(CFG)
    assert _param_ids(net) == _param_ids(net.encoder)
    n_net = sum(p.numel() for p in net.parameters())
    n_enc = sum(p.numel() for p in Encoder(CFG).parameters())
    assert n_net == n_enc


def test_siamese_gradients_from_both_branches_land_on_the_shared_weights() -> None:
    torch.manual_seed(0)
    net = SiameseNet.from_config(CFG).eval()  # eval: batch norm does not couple the branches
    x1, x2 = torch.randn(3, 1, 24, 20), torch.randn(3, 1, 24, 20)
    w = torch.randn(6)

    def backward(use1: bool, use2: bool) -> list[Tensor]:
        net.zero_grad()
        z1, z2 = net(x1, x2)
        loss = (z1 @ w).sum() * use1 + (z2 @ w).sum() * use2
        loss.backward()
        return _grads(net)

    g1 = backward(True, False)
    g2 = backward(False, True)
    g12 = backward(True, True)
    assert all(a.abs().sum() > 0 for a in g1) and all(b.abs().sum() > 0 for b in g2)
    for a, b, ab in zip(g1, g2, g12, strict=True):
        torch.testing.assert_close(ab, a + b)


def test_siamese_branches_are_the_same_function() -> None:
    torch.manual_seed(0)
    net = SiameseNet.from_config(CFG).eval()
    x = torch.randn(2, 1, 24, 20)
    z1, z2 = net(x, x)
    torch.testing.assert_close(z1, z2)
    torch.testing.assert_close(net.embed(x), z1)


def test_pseudo_siamese_has_two_disjoint_parameter_sets() -> None:
    torch.manual_seed(0)
    net = PseudoSiameseNet.from_config(CFG).eval()
    a, b = _param_ids(net.encoder_a), _param_ids(net.encoder_b)
    assert not a & b
    assert _param_ids(net) == a | b
    assert sum(p.numel() for p in net.parameters()) == 2 * sum(
        p.numel() for p in Encoder(CFG).parameters()
    )
    x = torch.randn(2, 1, 24, 20)
    z1, z2 = net(x, x)
    assert not torch.allclose(z1, z2)  # different weights, different embeddings
    z1.sum().backward()
    assert all(p.grad is not None for p in net.encoder_a.parameters())
    assert all(p.grad is None for p in net.encoder_b.parameters())
    with pytest.raises(ValueError, match="distinct"):
        enc = Encoder(CFG)
        PseudoSiameseNet(enc, enc)


def test_two_channel_scores_pairs_without_embeddings() -> None:
    torch.manual_seed(0)
    net = TwoChannelNet(CFG).eval()
    assert net.trunk.in_channels == 2
    x1, x2 = torch.randn(4, 1, 24, 20), torch.randn(4, 1, 24, 20)
    s = net(x1, x2)
    assert s.shape == (4,)
    torch.testing.assert_close(net.similarity(x1, x2), net.similarity(x2, x1))
    assert embedding_encoder(net) is None
    with pytest.raises(ValueError, match="same shape"):
        net(x1, x2[:2])


class _NegativeDistanceNet(TwoChannelNet):
    """A two-channel net whose score is minus the mean absolute pixel difference."""

    def similarity(self, x1: Tensor, x2: Tensor) -> Tensor:
        return -(x1 - x2).abs().flatten(1).mean(dim=1)


def test_rerank_orders_candidates_best_first() -> None:
    net = _NegativeDistanceNet(CFG)
    g = torch.Generator().manual_seed(0)
    probe = torch.rand(1, 24, 20, generator=g)
    noise = [0.5, 0.0, 0.9, 0.1, 0.3]  # candidate i = probe + noise_i * random
    candidates = torch.stack([probe + n * torch.rand(1, 24, 20, generator=g) for n in noise])
    ids = [10, 11, 12, 13, 14]
    ranked = rerank(net, probe, candidates, ids, batch_size=2)
    assert [i for i, _ in ranked] == [11, 13, 14, 10, 12]
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s <= 1.0 for s in scores)
    assert ranked[0][1] == pytest.approx(0.5)  # sigmoid(0): the identical candidate


def test_rerank_with_a_real_net_matches_its_scores() -> None:
    torch.manual_seed(0)
    net = TwoChannelNet(CFG)
    probe = torch.randn(1, 24, 20)
    candidates = torch.randn(7, 1, 24, 20)
    ranked = rerank(net, probe, candidates, list(range(7)), batch_size=3)
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        expected = torch.sigmoid(net.similarity(probe.expand(7, 1, 24, 20), candidates))
    order = torch.argsort(expected, descending=True).tolist()
    assert [i for i, _ in ranked] == order
    assert rerank(net, probe, candidates[:0], []) == []


def test_rerank_validates_inputs() -> None:
    net = TwoChannelNet(CFG)
    probe = torch.randn(1, 24, 20)
    with pytest.raises(ValueError, match="ids"):
        rerank(net, probe, torch.randn(3, 1, 24, 20), [1, 2])
    with pytest.raises(ValueError, match="candidates"):
        rerank(net, probe, torch.randn(3, 1, 20, 24), [1, 2, 3])
    with pytest.raises(ValueError, match="TwoChannelNet"):
        rerank(SiameseNet.from_config(CFG), probe, torch.randn(1, 1, 24, 20), [1])  # type: ignore[arg-type]


def test_build_net_by_arch_name() -> None:
    assert isinstance(build_net("siamese", CFG), SiameseNet)
    assert isinstance(build_net("pseudo", CFG), PseudoSiameseNet)
    assert isinstance(
        build_net("two-channel", dataclasses.replace(CFG, in_channels=3)), TwoChannelNet
    )
    with pytest.raises(ValueError, match="arch"):
        build_net("triplet", CFG)
