"""Tests for the seeded synthetic face generator."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamese.synthetic import (
    IdentityParams,
    generate_gallery,
    identity_rng,
    image_rng,
    render_face,
    sample_identity,
)


def _digests(pairs: list[tuple[Path, str]], root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path, _ in pairs
    }


def _pixels(pairs: list[tuple[Path, str]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([np.asarray(Image.open(p), dtype=np.float32).ravel() for p, _ in pairs])
    names = np.array([name for _, name in pairs])
    return x, names


def test_layout_counts_size_and_mode(tmp_path: Path) -> None:
    pairs = generate_gallery(tmp_path, identities=3, per_identity=4, seed=0)
    assert len(pairs) == 12
    assert sorted(d.name for d in tmp_path.iterdir()) == [
        "person_0000",
        "person_0001",
        "person_0002",
    ]
    for path, name in pairs:
        assert path.parent == tmp_path / name
        assert path.suffix == ".png"
        with Image.open(path) as img:
            assert img.size == (92, 112)
            assert img.mode == "L"
    assert [p.name for p, _ in pairs[:4]] == ["000.png", "001.png", "002.png", "003.png"]


def test_rgb_custom_size_and_pgm(tmp_path: Path) -> None:
    pairs = generate_gallery(tmp_path / "rgb", 2, 2, seed=1, size=(64, 80), mode="RGB")
    with Image.open(pairs[0][0]) as img:
        assert img.size == (64, 80) and img.mode == "RGB"
    pgm = generate_gallery(tmp_path / "pgm", 1, 2, seed=1, fmt="pgm")
    assert pgm[0][0].suffix == ".pgm"
    with Image.open(pgm[0][0]) as img:
        assert img.mode == "L"


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = generate_gallery(tmp_path / "a", 3, 3, seed=42)
    b = generate_gallery(tmp_path / "b", 3, 3, seed=42)
    assert _digests(a, tmp_path / "a") == _digests(b, tmp_path / "b")


def test_different_seeds_differ(tmp_path: Path) -> None:
    a = _digests(generate_gallery(tmp_path / "a", 2, 2, seed=1), tmp_path / "a")
    b = _digests(generate_gallery(tmp_path / "b", 2, 2, seed=2), tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a)


def test_prefix_stability_more_identities_and_images(tmp_path: Path) -> None:
    small = _digests(generate_gallery(tmp_path / "s", 2, 2, seed=5), tmp_path / "s")
    big = _digests(generate_gallery(tmp_path / "b", 4, 3, seed=5), tmp_path / "b")
    assert all(big[k] == v for k, v in small.items())


def test_first_identity_offset_matches_full_run(tmp_path: Path) -> None:
    full = _digests(generate_gallery(tmp_path / "f", 3, 2, seed=9), tmp_path / "f")
    tail = _digests(
        generate_gallery(tmp_path / "t", 1, 2, seed=9, first_identity=2), tmp_path / "t"
    )
    assert set(tail) == {"person_0002/000.png", "person_0002/001.png"}
    assert all(full[k] == v for k, v in tail.items())


def test_identity_signal_and_no_near_copies(tmp_path: Path) -> None:
    pairs = generate_gallery(tmp_path, identities=12, per_identity=5, seed=3)
    x, names = _pixels(pairs)
    dist = np.abs(x[:, None, :] - x[None, :, :]).mean(axis=-1)
    same = (names[:, None] == names[None, :]) & ~np.eye(len(names), dtype=bool)
    diff = names[:, None] != names[None, :]
    within, between = dist[same].mean(), dist[diff].mean()
    # Identity signal: people differ more than images of one person, on average.
    assert within < 0.9 * between
    # ... but images of one person are not near-copies (grey levels out of 255).
    assert within > 8.0
    assert dist[same].min() > 2.0


def test_variation_zero_is_easier_than_default() -> None:
    params = sample_identity(identity_rng(0, 0))

    def spread(v: float) -> float:
        imgs = [
            np.asarray(render_face(params, image_rng(0, 0, j), variation=v), dtype=np.float32)
            for j in range(4)
        ]
        return float(np.mean([np.abs(imgs[0] - im).mean() for im in imgs[1:]]))

    assert spread(0.0) < spread(1.0) < spread(2.0)


def test_identity_params_are_frozen_and_seeded() -> None:
    a = sample_identity(np.random.default_rng(7))
    b = sample_identity(np.random.default_rng(7))
    assert a == b
    assert isinstance(a, IdentityParams)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.face_w = 0.5  # type: ignore[misc]
    # Generating a face does not depend on any global random state.
    np.random.seed(123)
    x = np.asarray(render_face(a, np.random.default_rng(1)))
    np.random.seed(456)
    y = np.asarray(render_face(a, np.random.default_rng(1)))
    assert np.array_equal(x, y)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"identities": 0},
        {"per_identity": 0},
        {"seed": -1},
        {"fmt": "gif"},
        {"mode": "CMYK"},
        {"fmt": "pgm", "mode": "RGB"},
        {"size": (8, 8)},
        {"variation": 3.0},
    ],
)
def test_bad_arguments_raise_value_error(tmp_path: Path, kwargs: dict) -> None:
    args = {"identities": 1, "per_identity": 1, "seed": 0} | kwargs
    with pytest.raises(ValueError):
        generate_gallery(tmp_path, **args)
    assert not any(tmp_path.iterdir())
