"""Preprocessing, bulk loading, the DataLoader dataset and folder listing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from siamese.config import EncoderConfig
from siamese.data import (
    FaceDataset,
    ImageRejected,
    encode_labels,
    list_identity_folders,
    load_faces,
    preprocess,
)

CFG = EncoderConfig(input_size=(28, 24), widths=(4, 8))


def _write_tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for person in ["s1", "s10", "s2"]:
        (root / person).mkdir(parents=True)
        for j in [1, 10, 2]:
            arr = rng.integers(0, 256, size=(112, 92), dtype=np.uint8)
            Image.fromarray(arr, "L").save(root / person / f"{j}.pgm")
    (root / "s1" / "notes.txt").write_text("not an image")


def test_preprocess_grey_and_rgb() -> None:
    img = Image.new("RGB", (92, 112), (255, 0, 0))
    grey = preprocess(img, CFG)
    assert grey.shape == (1, 28, 24) and grey.dtype == torch.float32
    rgb = preprocess(img, EncoderConfig(in_channels=3, input_size=(28, 24), widths=(4, 8)))
    assert rgb.shape == (3, 28, 24)
    # The fixed normalisation: red channel (1.0) -> (1 - mean) / std, blue (0.0) -> -mean / std.
    assert rgb[0].mean().item() == pytest.approx((1.0 - CFG.pixel_mean) / CFG.pixel_std)
    assert rgb[2].mean().item() == pytest.approx(-CFG.pixel_mean / CFG.pixel_std)


def test_preprocess_range() -> None:
    img = Image.fromarray(np.array([[0, 255]] * 2, dtype=np.uint8), "L").resize((24, 28))
    x = preprocess(img, CFG)
    lo, hi = -CFG.pixel_mean / CFG.pixel_std, (1 - CFG.pixel_mean) / CFG.pixel_std
    assert x.min().item() >= lo - 1e-6 and x.max().item() <= hi + 1e-6


def test_folder_listing_natural_order_and_loading(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    paths, names = list_identity_folders(tmp_path)
    assert names == ["s1"] * 3 + ["s2"] * 3 + ["s10"] * 3
    assert [p.name for p in paths[:3]] == ["1.pgm", "2.pgm", "10.pgm"]
    labels, classes = encode_labels(names)
    assert classes == ["s1", "s2", "s10"]
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    faces = load_faces(paths, CFG)
    assert faces.shape == (9, 1, 28, 24)
    assert load_faces([], CFG).shape == (0, 1, 28, 24)


def test_dataset_with_worker_processes_matches_load_faces(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    paths, _ = list_identity_folders(tmp_path)
    ds = FaceDataset(paths, CFG)
    assert len(ds) == 9
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    torch.testing.assert_close(torch.cat(batches), load_faces(paths, CFG))


def test_unreadable_image_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageRejected):
        load_faces([bad], CFG)
    with pytest.raises(ImageRejected):
        FaceDataset([tmp_path / "missing.png"], CFG)[0]
