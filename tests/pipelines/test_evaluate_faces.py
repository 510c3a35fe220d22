"""Photos with several faces (or none) in evaluation: every face of a probe is a search, a labelled
photo contributes the person's face, a photo without one is a miss or a rejection (tiny fixtures
with known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.services.evaluation import (
    EmbeddedSet,
    Protocol,
    Split,
    probe_rows_of,
    score_fold,
)
from pipelines.services.face_choice import choose_faces

PEOPLE = ["a", "b", "c", "d"]  # a, b known; c calibrates; d is the test unknown
CENTRE = {p: np.eye(8, dtype=np.float32)[i] * 3 for i, p in enumerate(PEOPLE)}
STRANGER = np.eye(8, dtype=np.float32)[6] * 3  # in nobody's gallery


def _fixture(
    extra: dict[int, list[np.ndarray]],
) -> tuple[EmbeddedSet, list[str], list[str], Split, Protocol]:
    """4 photos per person, one face each near their centre; ``extra[row]`` adds faces to a
    row, put *before* the person's own (so the person's face is never the largest)."""
    names = [p for p in PEOPLE for _ in range(4)]
    rng = np.random.default_rng(0)
    faces, start = [], [0]
    for r, n in enumerate(names):
        own = CENTRE[n] + rng.normal(0, 0.05, 8).astype(np.float32)
        faces += [*extra.get(r, []), own]
        start.append(len(faces))
    embedded = EmbeddedSet(np.stack(faces), np.asarray(start), "l2", False)
    split = Split(train=[], known=["a", "b"], calib_unknown=["c"], test_unknown=["d"])
    protocol = Protocol(
        data="x",
        enroll=2,
        target_fpir=0.25,
        calibrate_on="unknown",
        template="best",
        multiple_faces="consistent",
    )
    paths = [f"{n}/{i}.jpg" for i, n in enumerate(names)]
    return embedded, names, paths, split, protocol


def test_photos_without_a_face_enrol_nothing_and_find_no_one() -> None:
    """Detect mode keeps every photo: one with no face is a miss if its person is enrolled and
    a correct rejection if not, never left out of the figures."""
    embedded, names, paths, split, protocol = _fixture({})
    full = score_fold(embedded, names, paths, split, protocol, 0, None)
    assert np.isfinite(full.mated_rank).all()  # every mated search finds its person

    valid = np.ones(len(names), dtype=bool)
    gallery, mated, _, test = probe_rows_of(names, split, protocol, 0)
    no_face = [mated[0], test[0], gallery[0]]  # a mated search, a non-mated one, an enrolment
    valid[no_face] = False
    vectors = embedded.face_vectors  # one face per row
    scores = score_fold(
        EmbeddedSet.one_per_row(vectors, "l2", False, valid), names, paths, split, protocol, 0, None
    )
    assert len(scores.mated_rank) == len(mated) and len(scores.test_nonmated) == len(test)
    assert np.isinf(scores.mated_rank[0]) and np.isinf(scores.mated_dist[0])  # a miss
    assert np.isfinite(scores.mated_rank[1:]).all()  # the person still has an enrolled photo
    assert np.isinf(scores.test_nonmated[0])  # rejected: found no one
    rows = {r["probe"]: r for r in scores.test_probe_rows}
    assert rows[paths[mated[0]]]["correct"] is False
    assert rows[paths[test[0]]]["correct"] is True


def test_every_face_of_a_probe_is_a_search() -> None:
    """A mated photo is found through a face that is not its largest; a non-mated photo with a
    background face of an enrolled person is a false positive; a stranger's face is neither."""
    embedded, names, paths, split, protocol = _fixture({})
    gallery, mated, _, test = probe_rows_of(names, split, protocol, 0)
    m, t, t2 = mated[0], test[0], test[1]
    owner = names[m]
    embedded, *_ = _fixture(
        {m: [STRANGER], t: [CENTRE["b"] + 0.01], t2: [STRANGER, STRANGER + 0.5]}
    )
    s = score_fold(embedded, names, paths, split, protocol, 0, None)
    rows = {r["probe"]: r for r in s.test_probe_rows}

    assert s.mated_rank[0] == 1 and s.mated_dist[0] < 0.5  # found by its second face
    assert rows[paths[m]]["faces"] == 2 and rows[paths[m]]["correct"] is True
    assert rows[paths[m]]["best_identity"] == owner
    j = test.index(t)
    assert s.test_nonmated[j] < 0.3 and s.test_nonmated_ids[j] == "b"  # b's face, in d's photo
    assert rows[paths[t]]["decision"] == "match" and rows[paths[t]]["correct"] is False
    assert s.test_nonmated[test.index(t2)] > 3.0  # strangers match no one
    assert s.figures["probes_several_faces"] == 3


def test_an_enrolment_photo_contributes_the_persons_face_not_the_largest() -> None:
    """a's first enrolled photo shows b's face larger than a's: enrolled as the largest face,
    a's probes are rejected and b's probe can match a; enrolled consistently, all are right."""
    embedded, names, paths, split, protocol = _fixture({})
    gallery, mated, _, _ = probe_rows_of(names, split, protocol, 0)
    first_a = next(r for r in gallery if names[r] == "a")
    embedded, *_ = _fixture({first_a: [CENTRE["b"] + 0.02]})

    consistent = score_fold(embedded, names, paths, split, protocol, 0, None)
    assert consistent.figures["enrolled_not_largest"] == 1
    assert (consistent.mated_rank == 1).all()

    largest = Protocol(**{**protocol.__dict__, "multiple_faces": "largest", "template": "mean"})
    wrong = score_fold(embedded, names, paths, split, largest, 0, None)
    assert wrong.figures["enrolled_not_largest"] == 0
    # a's mean template sits half-way to b: b's probes now rank a close behind or ahead
    a_rows = [j for j, r in enumerate(mated) if names[r] == "a"]
    assert (wrong.mated_dist[a_rows] > consistent.mated_dist[a_rows] + 0.5).all()

    refuse = Protocol(**{**protocol.__dict__, "multiple_faces": "refuse"})
    assert (
        score_fold(embedded, names, paths, split, refuse, 0, None).figures["enrolled_several_faces"]
        == 1
    )


def test_choose_faces_reference_rules() -> None:
    a, b = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    single = [a[None], (a + 0.01)[None], np.stack([b, a + 0.02])]
    got = choose_faces(single, distance="l2")
    assert [(c.face, c.chosen_by) for c in got] == [(0, "only"), (0, "only"), (1, "consistent")]
    # no single-face photo: the medoid face decides (a is in both photos, b and c in one each)
    c = np.eye(4, dtype=np.float32)[2]
    both = [np.stack([b, a]), np.stack([c, a + 0.01])]
    assert [x.face for x in choose_faces(both, distance="l2")] == [1, 1]
    # one ambiguous photo and nothing else: the largest, and said so
    assert choose_faces([np.stack([b, a])], distance="l2")[0].chosen_by == "largest"
    assert choose_faces([np.zeros((0, 4))], distance="l2")[0].face is None
    with pytest.raises(ValueError, match="--multiple-faces"):
        choose_faces(single, distance="l2", policy="smallest")


def test_verification_compares_probe_photos_with_the_claimed_persons_template() -> None:
    """EER is measured as the gallery verifies a claim: each probe photo (mated and test
    non-mated, every face) against each enrolled person's template; genuine when it is the
    photo's own person. The EER over pairs of single photos stays as ``pair_eer``."""
    embedded, names, paths, split, protocol = _fixture({})
    gallery, mated, _, test = probe_rows_of(names, split, protocol, 0)
    t = test[0]
    embedded, *_ = _fixture({t: [CENTRE["b"] + 0.01]})  # b's face in the back of d's photo
    mean = Protocol(**{**protocol.__dict__, "template": "mean"})
    s = score_fold(embedded, names, paths, split, mean, 0, None)

    def template(person: str) -> np.ndarray:
        rows = [r for r in gallery if names[r] == person]
        return np.mean([embedded.faces_of(r)[-1] for r in rows], axis=0)

    own = [np.linalg.norm(embedded.faces_of(r)[-1] - template(names[r])) for r in mated]
    assert sorted(s.genuine) == pytest.approx(sorted(own), rel=1e-5)
    assert s.genuine.size == len(mated)  # one claim per mated photo, of its own person
    assert s.impostor.size == len(mated) * 1 + len(test) * 2  # every other enrolled person
    assert s.impostor.min() == pytest.approx(np.linalg.norm(CENTRE["b"] + 0.01 - template("b")))
    assert 0.0 <= s.figures["pair_eer"] <= 1.0 and "eer" in s.figures
