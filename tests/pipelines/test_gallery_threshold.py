"""A calibrated threshold set again for a gallery 4x the size it was calibrated with (issue 20),
on synthetic descriptors."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.services.scoring import (
    false_match_tail,
    operating_threshold,
    threshold_for_gallery,
)
from siamese.distances import pairwise_distances
from siamese.openset import fpir_at


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_threshold_follows_the_gallery_size() -> None:
    rng = np.random.default_rng(0)
    people = _unit(rng.normal(size=(400, 24)))  # enrolled templates
    searches = _unit(rng.normal(size=(8000, 24)))  # non-mated: none of them is enrolled
    d = pairwise_distances(searches, people, "l2")
    calib, test = d[:4000], d[4000:]
    small, grown = 100, 400  # calibrated with a quarter of the people enrolled

    threshold = operating_threshold(0.01, calib[:, :small].min(axis=1))
    tail = false_match_tail(calib[:, :small])
    assert tail["comparisons"] == 4000 * small and len(tail["lowest"]) == 4096
    assert fpir_at(threshold, test[:, :small].min(axis=1)) == pytest.approx(0.01, abs=0.005)

    fixed = fpir_at(threshold, test[:, :grown].min(axis=1))
    adjusted = threshold_for_gallery(threshold, tail, small, grown)
    realised = fpir_at(adjusted, test[:, :grown].min(axis=1))
    assert fixed > 0.03  # a fixed threshold lets FPIR grow with the gallery, about 4x
    assert adjusted < threshold and realised == pytest.approx(0.01, abs=0.01)

    assert threshold_for_gallery(threshold, tail, small, small) == threshold
    assert threshold_for_gallery(threshold, tail, small, 50) >= threshold  # a smaller gallery
    assert threshold_for_gallery(threshold, {}, small, grown) == threshold  # nothing kept
