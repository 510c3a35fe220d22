"""Ensembles of independently trained encoders (TrainConfig.members)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from siamese.config import AugmentConfig, EncoderConfig, TrainConfig
from siamese.distances import pairwise_distances
from siamese.encoder import Encoder
from siamese.ensemble import EnsembleEncoder
from siamese.nets import SiameseNet
from siamese.training import embed, load_checkpoint, train

CFG = EncoderConfig(input_size=(16, 16), widths=(4, 8), embedding_dim=8, dropout=0.0)


def test_ensemble_embedding_is_unit_norm_and_its_l2_is_the_rms_of_the_members() -> None:
    torch.manual_seed(0)
    members = [Encoder(CFG).eval() for _ in range(3)]
    ens = EnsembleEncoder(members).eval()
    x = torch.randn(5, 1, 16, 16)
    z = ens(x)
    assert z.shape == (5, 24) and ens.embedding_dim == 24
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    d = pairwise_distances(z.detach().numpy(), z.detach().numpy(), "l2")
    parts = [m(x).detach().numpy() for m in members]
    d_members = np.stack([pairwise_distances(p, p, "l2") for p in parts])
    assert np.allclose(d, np.sqrt((d_members**2).mean(axis=0)), atol=1e-5)


def test_ensemble_refuses_no_members_or_mixed_inputs() -> None:
    with pytest.raises(ValueError, match="at least one"):
        EnsembleEncoder([])
    other = dataclasses.replace(CFG, input_size=(24, 16))
    with pytest.raises(ValueError, match="same input"):
        EnsembleEncoder([Encoder(CFG), Encoder(other)])


def _faces(people: int = 6, per: int = 4) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(people, 1, 16, 16, generator=g)
    x = protos.repeat_interleave(per, 0) + 0.3 * torch.randn(people * per, 1, 16, 16, generator=g)
    return x, np.repeat(np.arange(people), per)


def test_training_members_writes_one_checkpoint_that_embeds_with_all(tmp_path: Path) -> None:
    images, labels = _faces()
    config = TrainConfig(
        epochs=2, members=2, val_fraction=0.34, augment=AugmentConfig.none(), device="cpu"
    )
    seen: list[tuple[int, int]] = []
    ckpt_path = tmp_path / "m.pt"
    result = train(
        images,
        labels,
        config,
        CFG,
        checkpoint_path=ckpt_path,
        on_epoch=lambda r: seen.append((r.member, r.epoch)),
    )
    assert seen == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert len(result.member_eers) == 2 and result.best_eer is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # member files cleaned up
    ckpt = load_checkpoint(ckpt_path)
    assert isinstance(ckpt.net, SiameseNet) and isinstance(ckpt.encoder, EnsembleEncoder)
    assert len(ckpt.encoder.members) == 2
    assert ckpt.val_identities == result.val_identities
    # Members were trained on different seeds: their weights differ.
    a, b = (list(m.parameters())[0] for m in ckpt.encoder.members)
    assert not torch.equal(a, b)
    z = embed(ckpt.encoder, images)
    assert z.shape == (images.shape[0], 16)
    # Deterministic: the same call gives the same ensemble.
    train(images, labels, config, CFG, checkpoint_path=tmp_path / "again.pt")
    z2 = embed(load_checkpoint(tmp_path / "again.pt").encoder, images)
    assert np.array_equal(z, z2)


def test_one_member_keeps_the_plain_checkpoint(tmp_path: Path) -> None:
    images, labels = _faces()
    config = TrainConfig(epochs=1, members=1, val_fraction=0.0, augment=AugmentConfig.none())
    result = train(images, labels, config, CFG, checkpoint_path=tmp_path / "m.pt")
    assert result.member_eers == []
    assert isinstance(load_checkpoint(tmp_path / "m.pt").encoder, Encoder)


def test_members_is_validated_and_ignored_for_two_channel() -> None:
    with pytest.raises(ValueError, match="members"):
        TrainConfig(members=0)
    assert TrainConfig(arch="two-channel", loss="bce").effective_members == 1
