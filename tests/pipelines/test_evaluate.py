"""The evaluation protocol's splits and probe sets (plain functions, no training)."""

from __future__ import annotations

import pytest

from pipelines.services.evaluation import EvaluationError, Protocol, probe_rows_of, split_people

PEOPLE = [f"p{i:02d}" for i in range(20)]
NAMES = [p for p in PEOPLE for _ in range(10)]


def test_split_is_identity_disjoint_seeded_and_differs_per_fold() -> None:
    protocol = Protocol(data="x", seed=3)
    a, b = split_people(NAMES, protocol, 0), split_people(NAMES, protocol, 0)
    assert a == b
    groups = [a.train, a.known, a.calib_unknown, a.test_unknown]
    assert sum(map(len, groups)) == 20 and len(set().union(*map(set, groups))) == 20
    assert (len(a.train), len(a.known), len(a.calib_unknown), len(a.test_unknown)) == (10, 5, 2, 3)
    assert split_people(NAMES, protocol, 1) != a


@pytest.mark.parametrize("calibrate_on", ["unknown+train", "unknown"])
def test_probe_sets_never_mix_and_calibration_people_are_chosen(calibrate_on: str) -> None:
    protocol = Protocol(data="x", enroll=4, calibrate_on=calibrate_on)
    split = split_people(NAMES, protocol, 0)
    gallery, mated, calib, test = probe_rows_of(NAMES, split, protocol, 0)
    assert len(gallery) == 4 * len(split.known) and len(mated) == 6 * len(split.known)
    who = {
        name: {NAMES[r] for r in rows}
        for name, rows in (("gallery", gallery), ("mated", mated), ("calib", calib), ("test", test))
    }
    assert who["gallery"] == who["mated"] == set(split.known)
    assert who["test"] == set(split.test_unknown)
    expected = set(split.calib_unknown) | (set(split.train) if calibrate_on != "unknown" else set())
    assert who["calib"] == expected
    assert who["calib"].isdisjoint(who["test"] | who["gallery"])
    assert not set(gallery) & set(mated)


def test_a_given_model_calibrates_on_its_own_people_and_never_evaluates_them() -> None:
    protocol = Protocol(data="x", model="m1")
    own = {"p00", "p01", "p02", "p03"}
    split = split_people(NAMES, protocol, 0, exclude=own)
    assert set(split.train) == own
    assert own.isdisjoint(split.known + split.calib_unknown + split.test_unknown)
    _, _, calib, _ = probe_rows_of(NAMES, split, protocol, 0)
    assert own <= {NAMES[r] for r in calib}


def test_protocol_refuses_unknown_calibration_choice_and_no_members() -> None:
    with pytest.raises(EvaluationError, match="--calibrate-on"):
        Protocol(data="x", calibrate_on="everyone")
    with pytest.raises(EvaluationError, match="--members"):
        Protocol(data="x", members=0)


def test_fold_encoders_take_the_protocols_backbone_epochs_and_tune_mode() -> None:
    from pipelines.services.crops import CropSpec
    from pipelines.services.eval_steps import fold_options

    zs = fold_options(Protocol(data="x", backbone="dlib-resnet"), 0, CropSpec.dlib_chips())
    assert (zs.backbone, zs.head_epochs, zs.tune_mode) == ("dlib-resnet", 0, "head")
    tuned = Protocol(data="x", backbone="dlib-resnet", epochs=3, tune="last-stages", seed=4)
    options = fold_options(tuned, 1, CropSpec.dlib_chips())
    assert (options.head_epochs, options.tune_mode, options.seed) == (3, "last-stages", 5)
    options.configs()  # a valid combination
