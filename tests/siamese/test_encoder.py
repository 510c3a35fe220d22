"""Encoder architecture: shapes, normalisation, the Chopra 2005 preset."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from siamese.config import EncoderConfig
from siamese.encoder import Encoder

SMALL = EncoderConfig(input_size=(24, 20), widths=(4, 8), embedding_dim=6)


def test_default_encoder_output_is_unit_norm() -> None:
    enc = Encoder(EncoderConfig()).eval()
    h, w = EncoderConfig().input_size
    z = enc(torch.randn(3, 1, h, w))
    assert z.shape == (3, EncoderConfig().embedding_dim)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("pooling", ["avg", "flatten"])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_for_poolings_and_channels(pooling: str, channels: int) -> None:
    cfg = dataclasses.replace(SMALL, pooling=pooling, in_channels=channels, normalize=False)
    enc = Encoder(cfg).eval()
    assert enc.input_shape == (channels, 24, 20)
    z = enc(torch.randn(2, channels, 24, 20))
    assert z.shape == (2, 6)
    assert not torch.allclose(z.norm(dim=1), torch.ones(2))


def test_chopra2005_layers() -> None:
    enc = Encoder(EncoderConfig.chopra2005())
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [
        (15, (7, 7)),
        (45, (6, 6)),
        (250, (5, 5)),
    ]
    # 56x46 -> C1 50x40 -> S2 25x20 -> C3 20x15 -> S4 5x5 -> C5 1x1: F6 sees 250 units.
    assert enc.feature_dim == 250
    assert enc.head.out_features == 50
    assert enc(torch.randn(2, 1, 56, 46)).shape == (2, 50)


def test_wrong_input_shape_is_a_clear_error() -> None:
    enc = Encoder(SMALL)
    with pytest.raises(ValueError, match=r"\[B, 1, 24, 20\]"):
        enc(torch.randn(2, 1, 20, 24))


def test_too_small_input_for_chopra_preset() -> None:
    with pytest.raises(ValueError, match="too small"):
        Encoder(dataclasses.replace(EncoderConfig.chopra2005(), input_size=(20, 20)))


def test_default_encoder_is_small() -> None:
    # The default must train in minutes on two CPU cores.
    n = sum(p.numel() for p in Encoder(EncoderConfig()).parameters())
    assert n < 2_000_000


def test_flip_tta_makes_eval_embeddings_mirror_invariant() -> None:
    torch.manual_seed(0)
    enc = Encoder(dataclasses.replace(SMALL, flip_tta=True, dropout=0.0)).eval()
    x = torch.randn(3, 1, 24, 20)
    torch.testing.assert_close(enc(x), enc(x.flip(dims=[3])), rtol=1e-5, atol=1e-6)
    enc.train()  # training sees single images: augmentation does the flipping there
    assert not torch.allclose(enc(x), enc(x.flip(dims=[3])))
