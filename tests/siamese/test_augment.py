"""Tensor augmentation: identity when off, seeded, shape-preserving, flips exactly."""

from __future__ import annotations

import numpy as np
import torch

from siamese.augment import AugmentConfig, augment, torch_generator

X = torch.randn(5, 1, 24, 20, generator=torch.Generator().manual_seed(0))


def test_disabled_is_identity() -> None:
    assert augment(X, AugmentConfig.none(), torch.Generator().manual_seed(0)) is X


def test_same_seed_same_output_and_shape() -> None:
    a = augment(X, AugmentConfig(), torch_generator(np.random.default_rng(1)))
    b = augment(X, AugmentConfig(), torch_generator(np.random.default_rng(1)))
    c = augment(X, AugmentConfig(), torch_generator(np.random.default_rng(2)))
    assert a.shape == X.shape
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, X)


def test_zero_ranges_with_certain_flip_mirror_exactly() -> None:
    cfg = AugmentConfig(
        max_shift=0.0, max_rotation=0.0, max_scale=0.0, brightness=0.0, contrast=0.0, hflip_prob=1.0
    )
    torch.testing.assert_close(augment(X, cfg, torch.Generator().manual_seed(0)), X.flip(dims=[3]))


def test_tiny_geometric_jitter_stays_close() -> None:
    cfg = AugmentConfig(
        max_shift=1e-4,
        max_rotation=0.01,
        max_scale=1e-4,
        brightness=0.0,
        contrast=0.0,
        hflip_prob=0.0,
    )
    out = augment(X, cfg, torch.Generator().manual_seed(0))
    assert (out - X).abs().max() < 0.05


def test_photometric_jitter_keeps_structure() -> None:
    cfg = AugmentConfig(
        max_shift=0.0, max_rotation=0.0, max_scale=0.0, brightness=0.5, contrast=0.3, hflip_prob=0.0
    )
    out = augment(X, cfg, torch.Generator().manual_seed(0))
    # An affine change of intensity per image: perfectly correlated with the input.
    for i in range(X.shape[0]):
        corr = np.corrcoef(out[i].flatten().numpy(), X[i].flatten().numpy())[0, 1]
        assert corr > 0.999


def test_random_erasing_blanks_one_rectangle_per_image() -> None:
    cfg = AugmentConfig(
        max_shift=0.0,
        max_rotation=0.0,
        max_scale=0.0,
        brightness=0.0,
        contrast=0.0,
        hflip_prob=0.0,
        erase_prob=1.0,
        erase_area=0.3,
    )
    x = X + 10.0  # no pixel is 0 before erasing
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    for i in range(x.shape[0]):
        erased = out[i, 0] == 0.0
        assert 0 < int(erased.sum()) <= 0.3 * 24 * 20 + 2 * (24 + 20)
        rows = erased.any(dim=1).nonzero().flatten()
        cols = erased.any(dim=0).nonzero().flatten()
        # The erased pixels fill their bounding box: a rectangle.
        assert int(erased.sum()) == len(rows) * len(cols)
        torch.testing.assert_close(out[i, 0][~erased], x[i, 0][~erased])
