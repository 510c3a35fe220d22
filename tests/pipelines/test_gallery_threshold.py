"""A calibrated threshold set again for a gallery 4x the size it was calibrated with (issue 20),
on synthetic descriptors."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.services.scoring import (
    false_match_tail,
    gallery_self_search,
    operating_threshold,
    set_for_size,
    threshold_for_gallery,
    threshold_for_searches,
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


def test_a_grown_gallery_with_look_alikes_is_searched_again() -> None:
    """The people enrolled after calibration come from a region of face space where people
    look alike, as do half the visitors: the per-comparison model of the 100 people at
    calibration cannot know, and FPIR grows far past the target; the calibration's searches
    run again against the grown gallery, pooled with the gallery's own people searched
    against each other (``threshold_for_searches``), bring it back within a point."""
    rng = np.random.default_rng(1)
    dim, photos = 24, 8

    def faces_of(centres: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.repeat(centres, n, axis=0) + rng.normal(0, 0.1, (len(centres) * n, dim))
        return _unit(x), np.repeat(np.arange(len(centres)), n)

    def region(n: int) -> np.ndarray:  # look-alikes: around one direction
        return _unit(np.eye(dim)[0] + rng.normal(0, 0.25, (n, dim)))

    unknown = np.vstack([_unit(rng.normal(size=(150, dim))), region(150)])[rng.permutation(300)]
    people = np.vstack([_unit(rng.normal(size=(100, dim))), region(300)])  # 100 at calibration
    enrolled, owner = faces_of(people, 5)
    templates = np.stack([enrolled[owner == p].mean(axis=0) for p in range(len(people))])
    searches, who = faces_of(unknown, photos)
    d = pairwise_distances(searches, templates, "l2")
    calib, test = d[who < 150], d[who >= 150]
    small, grown = 100, len(people)

    threshold = operating_threshold(0.01, calib[:, :small].min(axis=1))
    tail = false_match_tail(calib[:, :small])
    adjusted = threshold_for_gallery(threshold, tail, small, grown)

    self_best = gallery_self_search(pairwise_distances(enrolled, templates, "l2"), owner)
    assert np.all(self_best > 0) and self_best.shape == (len(enrolled),)
    again = threshold_for_searches(0.01, calib.min(axis=1), self_best)
    assert fpir_at(adjusted, test.min(axis=1)) > 0.1  # the look-alikes alarm
    assert fpir_at(again, test.min(axis=1)) == pytest.approx(0.01, abs=0.01)
    assert set_for_size(400, 390) and not set_for_size(grown, small) and not set_for_size(5, None)
    with pytest.raises(ValueError, match="no non-mated searches"):
        threshold_for_searches(0.01, np.zeros(0), np.zeros(0))
