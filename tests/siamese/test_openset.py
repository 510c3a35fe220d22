"""Open-set identification metrics on hand-built score sets with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from siamese import openset
from siamese.openset import (
    cmc,
    det_curve,
    dir_at,
    dir_at_fpir,
    dir_fpir_curve,
    eer,
    fnir_at,
    fpir_at,
    nonmated_best_from_candidates,
    operating_points,
    per_identity_errors,
    rank1,
    ranks_from_candidates,
    tar_at_far,
    threshold_at_far,
    threshold_at_fpir,
)

INF = math.inf

# Six mated searches: the mate's best distance and its rank (inf: mate not in the list).
MATED_DIST = np.array([0.1, 0.2, 0.3, 0.4, 0.5, INF])
MATED_RANK = np.array([1, 1, 2, 1, 1, INF])
MATED_IDS = ["a", "a", "b", "b", "c", "c"]
# Ten non-mated searches: best candidate distance (inf: empty candidate list); 0.3 is tied.
NONMATED = np.array([0.15, 0.3, 0.3, 0.6, 0.9, INF, 1.0, 1.2, 1.5, 2.0])
NONMATED_IDS = ["a", "b", "c", "a", "a", None, "b", "c", "a", "b"]


def below(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


# ------------------------------------------------------------------------ FPIR / FNIR


def test_fpir_counts_scores_exactly_at_threshold() -> None:
    assert fpir_at(0.3, NONMATED) == pytest.approx(0.3)  # 0.15, 0.3, 0.3
    assert fpir_at(below(0.3), NONMATED) == pytest.approx(0.1)
    assert fpir_at(0.0, NONMATED) == 0.0
    # An empty candidate list (inf) is never a false positive, even at T = inf.
    assert fpir_at(INF, NONMATED) == pytest.approx(0.9)


def test_fnir_and_dir_known_values() -> None:
    # Rank 1, T = 0.3: hits are 0.1 and 0.2; 0.3 has rank 2 -> 4 misses of 6.
    assert fnir_at(0.3, MATED_DIST, MATED_RANK) == pytest.approx(4 / 6)
    # Rank 2 admits the mate at exactly T = 0.3 (inclusive).
    assert fnir_at(0.3, MATED_DIST, MATED_RANK, rank=2) == pytest.approx(0.5)
    assert fnir_at(below(0.3), MATED_DIST, MATED_RANK, rank=2) == pytest.approx(4 / 6)
    # T = inf: closed-set miss rate = 1 - CMC(1).
    assert fnir_at(INF, MATED_DIST, MATED_RANK) == pytest.approx(2 / 6)
    assert dir_at(0.3, MATED_DIST, MATED_RANK, rank=2) == pytest.approx(0.5)


# ------------------------------------------------------------------------ calibration


@pytest.mark.parametrize(
    ("target", "threshold", "realised"),
    [
        (0.0, below(0.15), 0.0),
        (0.05, below(0.15), 0.0),
        (0.1, below(0.3), 0.1),
        # Tie: the 2nd and 3rd smallest are both 0.3; admitting one admits both (FPIR 0.3),
        # so the threshold stays below 0.3 and the realised FPIR (0.1) undershoots 0.2.
        (0.2, below(0.3), 0.1),
        (0.25, below(0.3), 0.1),
        (0.3, below(0.6), 0.3),
        (0.85, below(2.0), 0.8),
        # Every finite score may alarm: accept everything.
        (0.9, INF, 0.9),
        (1.0, INF, 0.9),
    ],
)
def test_threshold_at_fpir_with_ties(target: float, threshold: float, realised: float) -> None:
    thr = threshold_at_fpir(target, NONMATED)
    assert thr == threshold
    assert fpir_at(thr, NONMATED) == pytest.approx(realised)
    assert fpir_at(thr, NONMATED) <= target
    # Largest such threshold: the next float up already exceeds the target (unless inf).
    if math.isfinite(thr):
        assert fpir_at(float(np.nextafter(thr, np.inf)), NONMATED) > target


def test_threshold_at_fpir_rounding_of_target_times_n() -> None:
    scores = np.arange(100, dtype=np.float64)  # 0.29 * 100 = 28.999999999999996 in floats
    thr = threshold_at_fpir(0.29, scores)
    assert thr == below(29.0)
    assert fpir_at(thr, scores) == pytest.approx(0.29)


def test_threshold_at_fpir_keeps_float32_precision() -> None:
    scores = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    thr = threshold_at_fpir(1 / 3, scores)
    # Just below 0.2 in float32, so storing the threshold as float32 keeps it below.
    assert np.float32(thr) < np.float32(0.2)
    assert np.float32(thr) == np.nextafter(np.float32(0.2), np.float32(-np.inf))
    assert fpir_at(thr, scores) == pytest.approx(1 / 3)
    assert fpir_at(float(np.float32(thr)), scores) == pytest.approx(1 / 3)


def test_dir_at_fpir_and_operating_points() -> None:
    result = dir_at_fpir([0.1, 0.3], MATED_DIST, MATED_RANK, NONMATED)
    # T just below 0.3: rank-1 hits 0.1, 0.2.  T just below 0.6: 0.1, 0.2, 0.4, 0.5.
    assert result == {0.1: pytest.approx(2 / 6), 0.3: pytest.approx(4 / 6)}
    assert dir_at_fpir([0.3], MATED_DIST, MATED_RANK, NONMATED, rank=2)[0.3] == pytest.approx(5 / 6)
    points = operating_points([0.2, 0.3], MATED_DIST, MATED_RANK, NONMATED)
    assert [p.threshold for p in points] == [below(0.3), below(0.6)]
    assert [p.fpir for p in points] == pytest.approx([0.1, 0.3])
    assert [p.fnir for p in points] == pytest.approx([4 / 6, 2 / 6])
    assert points[0].as_dict()["target_fpir"] == 0.2
    assert all(p.dir + p.fnir == pytest.approx(1.0) for p in points)


def test_dir_fpir_curve() -> None:
    curve = dir_fpir_curve(MATED_DIST, MATED_RANK, NONMATED)
    assert curve.thresholds[0] == -INF and curve.fpir[0] == 0.0 and curve.dir[0] == 0.0
    assert np.all(np.diff(curve.thresholds) > 0)
    assert np.all(np.diff(curve.fpir) >= 0) and np.all(np.diff(curve.dir) >= 0)
    i = int(np.flatnonzero(curve.thresholds == 0.3)[0])
    assert curve.fpir[i] == pytest.approx(0.3)
    assert curve.dir[i] == pytest.approx(2 / 6)
    assert curve.fpir[-1] == pytest.approx(0.9) and curve.dir[-1] == pytest.approx(4 / 6)
    # Every point agrees with the scalar functions.
    for t, f, d in zip(curve.thresholds[1:], curve.fpir[1:], curve.dir[1:], strict=True):
        assert f == pytest.approx(fpir_at(t, NONMATED))
        assert d == pytest.approx(dir_at(t, MATED_DIST, MATED_RANK))


# ------------------------------------------------------------------------------ CMC


def test_cmc_and_rank1() -> None:
    np.testing.assert_allclose(cmc(MATED_RANK, 3), [4 / 6, 5 / 6, 5 / 6])
    assert rank1(MATED_RANK) == pytest.approx(4 / 6)
    # Fractional (mid-rank) ties count at rank <= r.
    np.testing.assert_allclose(cmc(np.array([1.5, 1.0, 3.0, 2.0]), 3), [0.25, 0.75, 1.0])


def test_ranks_from_candidates_ties_duplicates_padding() -> None:
    a, b, c, d = 0, 1, 2, 3
    dist = np.array(
        [
            [0.1, 0.2, 0.2, 0.5],  # mate first
            [0.3, 0.3, 0.4, INF],  # tie with b at 0.3; padded slot
            [0.2, 0.25, 0.3, 0.35],  # mate absent
            [0.1, 0.15, 0.2, 0.2],  # b twice ahead (counts once), c tied
        ]
    )
    ids = np.array([[a, b, a, c], [b, a, c, -1], [b, c, b, d], [b, b, a, c]])
    true = np.array([a, a, a, a])
    md, mr = ranks_from_candidates(dist, ids, true)
    np.testing.assert_array_equal(md, [0.1, 0.3, INF, 0.2])
    np.testing.assert_array_equal(mr, [1, 2, INF, 3])
    _, mr_opt = ranks_from_candidates(dist, ids, true, ties="optimistic")
    np.testing.assert_array_equal(mr_opt, [1, 1, INF, 2])


def test_ranks_from_candidates_pad_id_and_string_ids() -> None:
    # FAISS padding: id -1 with a finite (huge) distance must be ignored too.
    md, mr = ranks_from_candidates(np.array([[0.5, 0.1]]), np.array([[7, -1]]), np.array([7]))
    assert (md[0], mr[0]) == (0.5, 1)
    ids = np.array([["bob", "amy", "amy"]])
    md, mr = ranks_from_candidates(np.array([[0.2, 0.4, 0.1]]), ids, np.array(["amy"]))
    assert (md[0], mr[0]) == (0.1, 1)


def test_nonmated_best_from_candidates() -> None:
    best, best_ids = nonmated_best_from_candidates(
        np.array([[0.5, 0.4], [INF, INF], [0.9, 0.2]]), np.array([[1, 2], [-1, -1], [3, -1]])
    )
    np.testing.assert_array_equal(best, [0.4, INF, 0.9])
    assert best_ids.tolist() == [2, -1, 3]


# --------------------------------------------------------------------- verification


def test_eer_known_values() -> None:
    assert eer(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.6, 0.7, 0.8]))[0] == 0.0
    rate, thr = eer(np.array([0.1, 0.2, 0.3, 0.6]), np.array([0.25, 0.7, 0.8, 0.9]))
    assert rate == pytest.approx(0.25)
    assert 0.3 <= thr < 0.6
    # A genuine and an impostor score exactly at 0.2 (tied), crossing at 0.25.
    assert eer(np.array([0.1, 0.2]), np.array([0.2, 0.3]))[0] == pytest.approx(0.25)


def test_det_curve_and_tar_at_far() -> None:
    genuine = np.array([0.1, 0.2, 0.3, 0.6])
    impostor = np.array([0.25, 0.7, 0.8, 0.9])
    det = det_curve(genuine, impostor)
    assert (det.far[0], det.frr[0]) == (0.0, 1.0)
    j = int(np.flatnonzero(det.thresholds == 0.3)[-1])
    assert (det.far[j], det.frr[j]) == (0.25, 0.25)
    # FAR 25 %: one impostor may be accepted -> T just below 0.7 -> every genuine accepted.
    assert threshold_at_far(0.25, impostor) == below(0.7)
    assert tar_at_far(genuine, impostor, 0.25) == 1.0
    # FAR 0 (or anything under 1/4): T just below 0.25 -> 0.1, 0.2 accepted.
    assert tar_at_far(genuine, impostor, 0.0) == 0.5
    assert tar_at_far(genuine, impostor, 0.24) == 0.5


# --------------------------------------------------------------------- per identity


def test_per_identity_errors() -> None:
    table = per_identity_errors(0.3, MATED_IDS, MATED_DIST, MATED_RANK, NONMATED, NONMATED_IDS)
    assert table["identity"] == ["b", "c", "a"]
    assert table["mated_searches"] == [2, 2, 2]
    assert table["misses"] == [2, 2, 0]
    assert table["miss_rate"] == [1.0, 1.0, 0.0]
    assert table["false_accepts"] == [1, 1, 1]  # 0.15 -> a, 0.3 -> b, 0.3 -> c
    assert table["mean_mated_dist"] == pytest.approx([0.35, 0.5, 0.15])
    # Total misses agree with FNIR.
    assert sum(table["misses"]) / len(MATED_IDS) == pytest.approx(
        fnir_at(0.3, MATED_DIST, MATED_RANK)
    )
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(table)
    assert list(frame.columns)[:3] == ["identity", "mated_searches", "misses"]


def test_per_identity_errors_without_nonmated() -> None:
    table = per_identity_errors(INF, MATED_IDS, MATED_DIST, MATED_RANK)
    assert dict(zip(table["identity"], table["misses"], strict=True)) == {"a": 0, "b": 1, "c": 1}
    assert table["false_accepts"] == [0, 0, 0]


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "call",
    [
        lambda: fpir_at(0.3, np.array([[0.1, 0.2]])),
        lambda: fpir_at(0.3, np.array([])),
        lambda: fpir_at(0.3, np.array([0.1, np.nan])),
        lambda: fpir_at(math.nan, NONMATED),
        lambda: fnir_at(0.3, MATED_DIST, MATED_RANK[:-1]),
        lambda: fnir_at(0.3, MATED_DIST, np.array([0, 1, 1, 1, 1, 1])),
        lambda: fnir_at(0.3, MATED_DIST, MATED_RANK, rank=0),
        lambda: threshold_at_fpir(1.5, NONMATED),
        lambda: threshold_at_fpir(-0.1, NONMATED),
        lambda: cmc(MATED_RANK, 0),
        lambda: tar_at_far(np.array([0.1, INF]), np.array([0.2]), 0.1),
        lambda: ranks_from_candidates(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros(2)),
        lambda: ranks_from_candidates(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3)),
        lambda: ranks_from_candidates(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1), ties="avg"),
        lambda: per_identity_errors(0.3, MATED_IDS[:2], MATED_DIST, MATED_RANK),
        lambda: per_identity_errors(0.3, MATED_IDS, MATED_DIST, MATED_RANK, NONMATED, None),
    ],
)
def test_bad_inputs_raise_value_error(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_modules_do_not_import_service_packages() -> None:
    # siamese/ must stay importable without prefect, sqlalchemy, faiss or the app packages.
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, siamese.openset, siamese.synthetic\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('prefect', 'sqlalchemy', 'faiss', 'index', 'storage', 'pipelines')]\n"
        "assert not bad, bad\n"
    )
    root = Path(openset.__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
