"""Config dataclasses: frozen, validated at construction, round-trip through dicts."""

from __future__ import annotations

import dataclasses

import pytest

from siamese.config import AugmentConfig, EncoderConfig, TrainConfig


def test_defaults_are_valid_and_frozen() -> None:
    cfg = EncoderConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.embedding_dim = 3  # type: ignore[misc]
    assert TrainConfig().augment == AugmentConfig()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 2}, "in_channels"),
        ({"input_size": (56,)}, "input_size"),
        ({"input_size": [56, 46]}, "input_size"),
        ({"input_size": (4, 46)}, "input_size"),
        ({"widths": ()}, "widths"),
        ({"widths": (8, 0)}, "widths"),
        ({"widths": (8,) * 7, "input_size": (64, 64)}, "too small"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"activation": "gelu"}, "activation"),
        ({"pooling": "max"}, "pooling"),
        ({"preset": "vgg"}, "preset"),
        ({"preset": "chopra2005", "widths": (15, 45)}, "three layers"),
        ({"pixel_std": 0.0}, "pixel_std"),
        ({"convs_per_stage": 0}, "convs_per_stage"),
    ],
)
def test_encoder_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EncoderConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "triplet"}, "arch"),
        ({"loss": "triplet"}, "loss"),
        ({"distance": "euclid"}, "distance"),
        ({"margin": 0.0}, "margin"),
        ({"margin": float("nan")}, "margin"),
        ({"epochs": 0}, "epochs"),
        ({"identities_per_batch": 1}, "identities_per_batch"),
        ({"images_per_identity": 1}, "images_per_identity"),
        ({"genuine_fraction": 0.0}, "genuine_fraction"),
        ({"genuine_fraction": 1.0}, "genuine_fraction"),
        ({"pairs_per_batch": 1}, "pairs_per_batch"),
        ({"hard_pool_factor": 0.5}, "hard_pool_factor"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"patience": -1}, "patience"),
        ({"device": "tpu"}, "device"),
        ({"seed": -1}, "seed"),
        ({"epochs": 2.5}, "epochs"),
        ({"arch": "two-channel"}, "bce"),
        ({"loss": "bce"}, "two-channel"),
        ({"augment": {"enabled": False}}, "AugmentConfig"),
        ({"positive_margin": 1.0, "margin": 1.0}, "positive_margin"),
        ({"positive_margin": 0.2, "loss": "chopra"}, "hadsell"),
    ],
)
def test_train_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_shift": 0.6}, "max_shift"),
        ({"max_rotation": -1.0}, "max_rotation"),
        ({"contrast": 1.0}, "contrast"),
        ({"hflip_prob": 1.5}, "hflip_prob"),
        ({"brightness": -0.1}, "brightness"),
        ({"erase_prob": 2.0}, "erase_prob"),
        ({"erase_area": 0.0}, "erase_area"),
    ],
)
def test_augment_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


def test_two_channel_with_bce_is_valid() -> None:
    assert TrainConfig(arch="two-channel", loss="bce").loss == "bce"


def test_dict_round_trip_including_lists() -> None:
    enc = EncoderConfig.chopra2005()
    data = dataclasses.asdict(enc)
    assert EncoderConfig.from_dict(data) == enc
    data["widths"] = list(data["widths"])  # as from JSON
    data["input_size"] = list(data["input_size"])
    assert EncoderConfig.from_dict(data) == enc
    train = TrainConfig(margin=0.7, augment=AugmentConfig(hflip_prob=0.0))
    assert TrainConfig.from_dict(dataclasses.asdict(train)) == train
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"nope": 1})


def test_chopra_preset_is_the_paper_network() -> None:
    cfg = EncoderConfig.chopra2005()
    assert cfg.preset == "chopra2005"
    assert cfg.input_size == (56, 46)
    assert cfg.widths == (15, 45, 250)
    assert cfg.embedding_dim == 50
