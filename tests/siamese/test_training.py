"""Training: identity-disjoint split, checkpoints, determinism, every arch, and a short real run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from siamese.config import AugmentConfig, EncoderConfig, TrainConfig
from siamese.nets import PseudoSiameseNet, SiameseNet, TwoChannelNet
from siamese.training import (
    EpochReport,
    embed,
    evaluate,
    load_checkpoint,
    split_identities,
    train,
)

ENC = EncoderConfig(input_size=(24, 20), widths=(4, 8), embedding_dim=8)
FAST = TrainConfig(
    epochs=1,
    identities_per_batch=4,
    images_per_identity=3,
    val_fraction=0.3,
    augment=AugmentConfig(max_rotation=5.0),
    members=1,  # ensembles: tests/siamese/test_ensemble.py
)


def toy_faces(
    identities: int = 10, per_identity: int = 5, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """Per-identity random patterns plus per-image noise: learnable, and cheap."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(identities, 1, 24, 20, generator=g)
    images = protos.repeat_interleave(per_identity, dim=0)
    images = images + 0.8 * torch.randn(images.shape, generator=g)
    return images, np.repeat(np.arange(identities), per_identity)


# -- identity-disjoint split -------------------------------------------------------


def test_split_is_identity_disjoint_complete_and_seeded() -> None:
    labels = np.repeat(np.arange(40), 10)
    train_ids, val_ids = split_identities(labels, 0.25, seed=0)
    assert val_ids.size == 10 and train_ids.size == 30
    assert not set(train_ids) & set(val_ids)
    assert set(train_ids) | set(val_ids) == set(range(40))
    again = split_identities(labels, 0.25, seed=0)
    np.testing.assert_array_equal(again[1], val_ids)
    other = split_identities(labels, 0.25, seed=1)
    assert not np.array_equal(other[1], val_ids)


def test_split_keeps_two_identities_per_side() -> None:
    labels = np.repeat(np.arange(5), 2)
    train_ids, val_ids = split_identities(labels, 0.01, seed=0)
    assert val_ids.size == 2
    train_ids, val_ids = split_identities(labels, 0.99, seed=0)
    assert train_ids.size == 2
    train_ids, val_ids = split_identities(labels, 0.0, seed=0)
    assert val_ids.size == 0 and train_ids.size == 5
    with pytest.raises(ValueError, match="at least 4 identities"):
        split_identities(np.arange(3), 0.3, seed=0)


def test_no_validation_person_is_seen_in_training(tmp_path: Path) -> None:
    images, labels = toy_faces()
    result = train(images, labels, FAST, ENC, checkpoint_path=tmp_path / "m.pt")
    assert not set(result.train_identities) & set(result.val_identities)
    assert sorted(result.train_identities + result.val_identities) == list(range(10))
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.val_identities == result.val_identities


def test_explicit_validation_identities(tmp_path: Path) -> None:
    images, labels = toy_faces()
    result = train(
        images, labels, FAST, ENC, checkpoint_path=tmp_path / "m.pt", val_identities=[2, 5, 7]
    )
    assert result.val_identities == [2, 5, 7]
    assert result.train_identities == [0, 1, 3, 4, 6, 8, 9]
    with pytest.raises(ValueError, match="do not occur"):
        train(images, labels, FAST, ENC, checkpoint_path=tmp_path / "m.pt", val_identities=[42, 1])
    with pytest.raises(ValueError, match="at least 2"):
        train(images, labels, FAST, ENC, checkpoint_path=tmp_path / "m.pt", val_identities=[1])


# -- checkpoints and determinism --------------------------------------------------


def test_checkpoint_round_trip_rebuilds_an_identical_model(tmp_path: Path) -> None:
    images, labels = toy_faces()
    path = tmp_path / "nested" / "model.pt"
    reports: list[EpochReport] = []
    result = train(
        images,
        labels,
        dataclasses.replace(FAST, epochs=2),
        ENC,
        checkpoint_path=path,
        on_epoch=reports.append,
    )
    assert [r.epoch for r in reports] == [1, 2]
    assert reports[0].val is not None and "val EER" in reports[0].line()

    ckpt = load_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert raw["encoder_config"] == dataclasses.asdict(ENC)
    assert raw["train_config"] == dataclasses.asdict(dataclasses.replace(FAST, epochs=2))
    assert raw["optimizer_state"]["state"]  # Adam moments were saved
    assert ckpt.encoder_config == ENC and ckpt.epoch == result.best_epoch
    assert ckpt.best_metric == pytest.approx(result.best_eer)
    assert isinstance(ckpt.net, SiameseNet) and ckpt.encoder is ckpt.net.encoder
    for k, v in ckpt.net.state_dict().items():
        torch.testing.assert_close(v, raw["model_state"][k])

    # The rebuilt model reproduces the validation figure recorded during training.
    val = np.isin(labels, result.val_identities)
    report = evaluate(ckpt.net, images[torch.from_numpy(val)], labels[val], FAST.distance)
    assert report.eer == pytest.approx(result.best_eer, abs=1e-12)

    again = load_checkpoint(path)
    x = images[:4]
    torch.testing.assert_close(embed(again.encoder, x), embed(ckpt.encoder, x))


def test_two_runs_with_a_seed_give_identical_weights(tmp_path: Path) -> None:
    images, labels = toy_faces()
    cfg = dataclasses.replace(FAST, hard_negatives=True)
    before = torch.get_rng_state()
    r1 = train(images, labels, cfg, ENC, checkpoint_path=tmp_path / "a.pt")
    r2 = train(images, labels, cfg, ENC, checkpoint_path=tmp_path / "b.pt")
    # The caller's global RNG is left as it was.
    assert torch.equal(torch.get_rng_state(), before)
    assert r1.history[0].train_loss == r2.history[0].train_loss
    a = torch.load(tmp_path / "a.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    r3 = train(
        images, labels, dataclasses.replace(cfg, seed=1), ENC, checkpoint_path=tmp_path / "c.pt"
    )
    c = torch.load(tmp_path / "c.pt", weights_only=True)["model_state"]
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert (
        r3.val_identities != r1.val_identities
        or r3.history[0].train_loss != r1.history[0].train_loss
    )


@pytest.mark.parametrize(
    ("overrides", "net_type"),
    [
        ({"arch": "pseudo", "loss": "chopra", "distance": "l1", "margin": 20.0}, PseudoSiameseNet),
        ({"arch": "two-channel", "loss": "bce"}, TwoChannelNet),
        ({"arch": "two-channel", "loss": "bce", "hard_negatives": False}, TwoChannelNet),
        ({"distance": "cosine", "hard_negatives": False, "pairs_per_batch": 20}, SiameseNet),
        ({"ema_decay": 0.9, "positive_margin": 0.2}, SiameseNet),
        ({"mine_identities": True, "epochs": 2}, SiameseNet),
        ({"arch": "pseudo", "mine_identities": True, "epochs": 2}, PseudoSiameseNet),
        ({"optimizer": "sgd", "lr": 0.05, "lr_schedule": "constant"}, SiameseNet),
    ],
)
def test_every_arch_trains_and_reloads(tmp_path: Path, overrides: dict, net_type: type) -> None:
    images, labels = toy_faces()
    cfg = dataclasses.replace(FAST, **overrides)
    result = train(images, labels, cfg, ENC, checkpoint_path=tmp_path / "m.pt")
    assert result.best_eer is not None and 0.0 <= result.best_eer <= 1.0
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert isinstance(ckpt.net, net_type)
    val = np.isin(labels, result.val_identities)
    report = evaluate(ckpt.net, images[torch.from_numpy(val)], labels[val], cfg.distance)
    assert report.eer == pytest.approx(result.best_eer, abs=1e-12)


def test_early_stopping_on_a_flat_validation_eer(tmp_path: Path) -> None:
    images, labels = toy_faces()
    enc = dataclasses.replace(ENC, batch_norm=False, dropout=0.0)
    # A vanishing learning rate leaves the weights, and so the EER, unchanged.
    cfg = dataclasses.replace(FAST, epochs=10, patience=2, lr=1e-12, lr_schedule="constant")
    result = train(images, labels, cfg, enc, checkpoint_path=tmp_path / "m.pt")
    assert result.stopped_early
    assert result.epochs_run == 3 and result.best_epoch == 1
    assert load_checkpoint(tmp_path / "m.pt").epoch == 1


def test_training_without_validation(tmp_path: Path) -> None:
    images, labels = toy_faces()
    cfg = dataclasses.replace(FAST, epochs=2, val_fraction=0.0)
    result = train(images, labels, cfg, ENC, checkpoint_path=tmp_path / "m.pt")
    assert result.best_eer is None and result.val_identities == []
    assert result.epochs_run == 2 and load_checkpoint(tmp_path / "m.pt").epoch == 2


def test_input_errors(tmp_path: Path) -> None:
    images, labels = toy_faces()
    with pytest.raises(ValueError, match="expects"):
        train(images[:, :, :20], labels, FAST, ENC, checkpoint_path=tmp_path / "m.pt")
    with pytest.raises(ValueError, match="labels"):
        train(images, labels[:-1], FAST, ENC, checkpoint_path=tmp_path / "m.pt")
    with pytest.raises(ValueError, match="integers"):
        train(images, labels.astype(float), FAST, ENC, checkpoint_path=tmp_path / "m.pt")
    with pytest.raises(FileNotFoundError, match="train a model"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "other.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a siamid"):
        load_checkpoint(tmp_path / "other.pt")


def test_embed_returns_float32_and_restores_mode() -> None:
    net = SiameseNet.from_config(ENC)
    images, _ = toy_faces(3, 2)
    out = embed(net.encoder, images, batch_size=4)
    assert out.dtype == np.float32 and out.shape == (6, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert net.encoder.training


# -- a real, short training run ---------------------------------------------------


@pytest.mark.slow
def test_short_training_on_synthetic_faces_beats_chance(tmp_path: Path) -> None:
    from siamese.data import encode_labels, load_faces
    from siamese.distances import pairwise_distances
    from siamese.metrics import eer, pair_distances_from_matrix
    from siamese.synthetic import generate_gallery

    # 36 training and 12 validation people; the synthetic faces are hard on purpose
    # (pose, light, expression, occlusion, blur), so this is a real generalisation test.
    gallery = generate_gallery(tmp_path / "faces", identities=48, per_identity=8, seed=0)
    labels, _ = encode_labels([name for _, name in gallery])
    enc = EncoderConfig()
    images = load_faces([p for p, _ in gallery], enc)
    cfg = TrainConfig(epochs=30, val_fraction=0.25, seed=0, members=1)
    result = train(images, labels, cfg, enc, checkpoint_path=tmp_path / "m.pt")

    val = np.isin(labels, result.val_identities)
    pixels = images[torch.from_numpy(val)].flatten(1).double().numpy()
    raw_eer, _ = eer(*pair_distances_from_matrix(pairwise_distances(pixels, pixels), labels[val]))
    print(f"synthetic validation EER {result.best_eer:.4f}, raw pixels {raw_eer:.4f}")
    assert result.best_eer is not None
    # Chance is 0.5; 30 epochs reach about 0.13 against about 0.3 for raw pixels.
    assert result.best_eer < 0.2, (result.best_eer, raw_eer)
    assert result.best_eer < 0.7 * raw_eer, (result.best_eer, raw_eer)
