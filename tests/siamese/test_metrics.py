"""Verification metrics: EER on hand-built distance sets, ties, quantiles."""

from __future__ import annotations

import numpy as np
import pytest

from siamese.metrics import (
    distance_quantiles,
    eer,
    pair_distances_from_matrix,
    roc,
    verification_report,
)


def test_perfectly_separated_sets_have_zero_eer_and_a_threshold_between_them() -> None:
    rate, thr = eer(np.array([0.1, 0.2, 0.3]), np.array([0.8, 0.9]))
    assert rate == 0.0
    assert 0.3 <= thr < 0.8


def test_identical_sets_have_eer_one_half() -> None:
    values = np.array([0.5, 1.0, 1.5, 2.0])
    rate, thr = eer(values, values.copy())
    assert rate == pytest.approx(0.5)
    assert 0.5 <= thr <= 2.0


def test_all_tied_distances_give_one_half() -> None:
    # Every pair at the same distance: any threshold accepts or rejects all of them.
    rate, thr = eer(np.ones(3), np.ones(5))
    assert rate == pytest.approx(0.5)
    assert thr == pytest.approx(1.0)


def test_reversed_sets_have_eer_one() -> None:
    rate, _ = eer(np.array([0.8, 0.9]), np.array([0.1, 0.2]))
    assert rate == pytest.approx(1.0)


def test_known_small_case_exact_crossing() -> None:
    # Thresholds: t<0.1 (FAR 0, FRR 1), 0.1 (0, 1/2), 0.3 (1/2, 1/2), 0.5 (1/2, 0), 0.9 (1, 0).
    # FAR == FRR == 1/2 exactly on [0.3, 0.5): the midpoint 0.4 is returned.
    rate, thr = eer(np.array([0.1, 0.5]), np.array([0.3, 0.9]))
    assert rate == pytest.approx(0.5)
    assert thr == pytest.approx(0.4)


def test_exact_crossing_is_not_lost_to_float_rounding() -> None:
    # t=0.4: FAR = 1/3 and FRR = 1 - 2/3; equal in exact arithmetic, not in floats.
    rate, thr = eer(np.array([0.1, 0.2, 0.6]), np.array([0.4, 0.7, 0.8]))
    assert rate == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.5)  # middle of [0.4, 0.6)


def test_known_small_case_interpolated_crossing() -> None:
    # t=0.2: (FAR 0, FRR 1/3), t=0.3: (FAR 1, FRR 1/3): FRR - FAR goes from 1/3 to -2/3,
    # so the crossing is a third of the way: EER 1/3 at threshold 0.2 + 0.1 / 3.
    rate, thr = eer(np.array([0.1, 0.2, 0.5]), np.array([0.3]))
    assert rate == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.2 + 0.1 / 3)


def test_ties_between_genuine_and_impostor_move_together() -> None:
    # The impostor tied with a genuine pair cannot be separated from it.
    curve = roc(np.array([0.1, 0.5]), np.array([0.5, 0.9]))
    np.testing.assert_allclose(curve.far, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(curve.frr, [1.0, 0.5, 0.0, 0.0])
    rate, thr = eer(np.array([0.1, 0.5]), np.array([0.5, 0.9]))
    # (0, 1/2) at 0.1 -> (1/2, 0) at 0.5: the crossing is at 1/4 halfway between.
    assert rate == pytest.approx(0.25)
    assert thr == pytest.approx(0.3)


def test_eer_matches_brute_force_on_random_sets() -> None:
    rng = np.random.default_rng(0)
    genuine = rng.normal(0.0, 1.0, 300).round(1)  # rounding creates many ties
    impostor = rng.normal(1.5, 1.0, 500).round(1)
    rate, thr = eer(genuine, impostor)
    # At the returned threshold FAR and FRR bracket the EER.
    far = np.mean(impostor <= thr)
    frr = np.mean(genuine > thr)
    assert min(far, frr) - 1e-9 <= rate <= max(far, frr) + 1e-9
    # And it is close to min over thresholds of max(FAR, FRR).
    ts = np.unique(np.concatenate([genuine, impostor]))
    best = min(max(np.mean(impostor <= t), np.mean(genuine > t)) for t in ts)
    assert rate <= best + 1e-9
    assert rate > 0.1


def test_eer_rejects_empty_and_nan() -> None:
    with pytest.raises(ValueError, match="genuine is empty"):
        eer(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        eer(np.array([0.1]), np.array([np.nan]))


def test_distance_quantiles_keys_and_values() -> None:
    q = distance_quantiles(np.arange(101.0))
    assert q == {"p5": 5.0, "p50": 50.0, "p95": 95.0}
    with pytest.raises(ValueError):
        distance_quantiles(np.arange(3.0), (1.5,))


def test_pair_distances_from_matrix_uses_upper_triangle() -> None:
    dist = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    genuine, impostor = pair_distances_from_matrix(dist, np.array([7, 7, 8]))
    np.testing.assert_array_equal(genuine, [1.0])
    np.testing.assert_array_equal(impostor, [2.0, 3.0])


def test_verification_report_counts_pairs() -> None:
    report = verification_report(np.array([0.1, 0.2]), np.array([0.8, 0.9, 1.0]))
    assert report.eer == 0.0
    assert (report.n_genuine, report.n_impostor) == (2, 3)
    assert set(report.genuine_quantiles) == {"p5", "p50", "p95"}
