"""Open-set evaluation on an identity-disjoint protocol: the protocol, splits and scoring.

Per fold (seeded), the people of the data set are split into:
- **train**: they train the fold's encoder (unless ``--model`` is given, in which case the
  model's own training and validation people are excluded from evaluation);
- **known**: enrolled with K images each; their other images are mated probes;
- **unknown, calibration half**: non-mated searches that set the threshold at the target FPIR;
- **unknown, test half**: non-mated test searches, never seen by calibration.
So no person used for training appears in evaluation, and the threshold is calibrated on people
separate from the test probes. Figures are averaged over folds with their spread.

The steps that need a runtime (detect, train, embed a fold) are in
:mod:`pipelines.services.eval_steps`; metrics.json, the report and the run's row in
:mod:`pipelines.services.eval_outputs`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faces.face import Face
from pipelines.services.errors import SiamidError
from pipelines.services.photo_faces import (
    EmbeddedSet,
    PersonFaces,
    PhotoSearches,
    mean_templates,
    person_faces,
    photo_searches,
)
from pipelines.services.scoring import (
    CALIBRATE_ON,
    MULTIPLE_FACES,
    TEMPLATES,
    claim_distances,
    operating_threshold,
    verification_pairs,
)
from siamese.metrics import eer
from siamese.openset import (
    DEFAULT_FAR_TARGETS,
    DEFAULT_FPIR_TARGETS,
    DEFAULT_TARGET_FPIR,
)

__all__ = ["EmbeddedSet", "PersonFaces", "PhotoSearches", "mean_templates", "person_faces"]

logger = logging.getLogger(__name__)


class EvaluationError(SiamidError):
    """A data set or protocol that cannot be evaluated as asked."""


@dataclass(frozen=True)
class Protocol:
    data: str
    folds: int = 3
    train_fraction: float = 0.5
    known_fraction: float = 0.5
    enroll: int = 5
    target_fpir: float = DEFAULT_TARGET_FPIR
    seed: int = 0
    model: str | None = None
    epochs: int | None = None
    members: int | None = None  # ensemble size of the fold encoders (None: the default, 3)
    # "best": nearest enrolled image; "mean": distance to the mean; None: the model's scoring
    # (a fold encoder's: its backbone's default, BACKBONE_SCORING); see :func:`resolve_protocol`
    template: str | None = None
    # Non-mated calibration searches: the calibration unknowns, and by default also the people
    # the encoder was trained on (neither is enrolled nor a test probe).
    calibrate_on: str = "unknown+train"
    # Crop mode: "whole" or "detect"; None: the given model's, else the backbone's default.
    faces: str | None = None
    backbone: str = "small-cnn"  # of the fold encoders
    tune: str | None = None  # dlib-resnet with epochs: how folds adapt it (TrainOptions.tune)
    flip_average: bool | None = None  # dlib-resnet: test-time flip; None: as template
    # Labelled photos with several usable faces (enrolment, verification pairs): whose face
    # is the person's (pipelines.services.face_choice.MULTIPLE_FACES); None: as template.
    multiple_faces: str | None = None

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise EvaluationError(f"--folds must be at least 1, got {self.folds}")
        for name in ("train_fraction", "known_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise EvaluationError(f"--{name.replace('_', '-')} must be in (0, 1), got {v}")
        if self.members is not None and self.members < 1:
            raise EvaluationError(f"--members must be at least 1, got {self.members}")
        if self.enroll < 1:
            raise EvaluationError(f"--enroll must be at least 1, got {self.enroll}")
        if not 0.0 < self.target_fpir < 1.0:
            raise EvaluationError(f"--target-fpir must be in (0, 1), got {self.target_fpir}")
        if self.template is not None and self.template not in TEMPLATES:
            raise EvaluationError(
                f"--template must be one of {', '.join(TEMPLATES)}, got {self.template!r}"
            )
        if self.multiple_faces is not None and self.multiple_faces not in MULTIPLE_FACES:
            raise EvaluationError(
                f"--multiple-faces must be one of {', '.join(MULTIPLE_FACES)}, "
                f"got {self.multiple_faces!r}"
            )
        if self.calibrate_on not in CALIBRATE_ON:
            raise EvaluationError(
                f"--calibrate-on must be one of {', '.join(CALIBRATE_ON)}, "
                f"got {self.calibrate_on!r}"
            )


@dataclass
class Split:
    train: list[str]
    known: list[str]
    calib_unknown: list[str]
    test_unknown: list[str]


@dataclass
class FoldScores:
    """Everything measured in one fold (distances, lower = more similar)."""

    fold: int
    model_version: str | None
    split: Split
    genuine: np.ndarray
    impostor: np.ndarray
    mated_dist: np.ndarray
    mated_rank: np.ndarray
    mated_ids: list[str]
    calib_nonmated: np.ndarray
    test_nonmated: np.ndarray
    test_nonmated_ids: list[str]
    test_probe_rows: list[dict[str, Any]]
    threshold: float
    figures: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalData:
    """The images of an evaluation data set, with the faces to crop from each in detect mode.

    In detect mode every photo stays in the protocol. ``faces[i]`` is the detector's choice
    (the largest usable face; training reads it), ``photo_faces[i]`` every usable face of the
    photo, largest first: each one is embedded, a probe searches with all of them and a
    labelled photo contributes the person's (:func:`person_faces`). A photo without a usable
    face (``no_face`` counts them by outcome) is answered as siamid would: it enrols nothing,
    trains nothing, and as a search it finds no one (a miss if its person is enrolled, a
    correct rejection if not). Verification (EER) compares probe photos with faces against
    enrolled templates (:func:`score_fold`).
    """

    paths: list[str]
    names: list[str]
    faces: list[Face | None] | None = None
    no_face: dict[str, int] = field(default_factory=dict)
    photo_faces: list[list[Face]] | None = None

    def with_face(self) -> list[int]:
        """Rows that have a face to crop (every row in whole-image mode)."""
        if self.faces is None:
            return list(range(len(self.paths)))
        return [i for i, f in enumerate(self.faces) if f is not None]

    def usable_faces(self) -> list[list[Face]]:
        """Every usable face of each row, largest first (whole-image mode: none)."""
        if self.photo_faces is not None:
            return self.photo_faces
        return [[] if f is None else [f] for f in (self.faces or [None] * len(self.paths))]


# ------------------------------------------------------------------ data and splits


def load_dataset(data: Path) -> tuple[list[str], list[str]]:
    """(paths, identity names) of the readable images of an ImageFolder, sorted."""
    from pipelines.services.gallery import scan_image_folder

    items = [it for it in scan_image_folder(data) if it.precheck is None]
    if not items:
        raise EvaluationError(f"{data} has no images; give PATH/<person>/<image>")
    return [str(it.path) for it in items], [str(it.identity) for it in items]


def split_people(
    people: list[str], protocol: Protocol, fold: int, exclude: set[str] | None = None
) -> Split:
    """A seeded, identity-disjoint split of the people for one fold."""
    rng = np.random.default_rng([protocol.seed, fold])
    pool = sorted(set(people) - (exclude or set()))
    order = [pool[i] for i in rng.permutation(len(pool))]
    if protocol.model:
        # The people the given model was trained (or validated) on: never evaluated, but
        # usable as calibration searches like a fold's training people.
        train, rest = sorted(set(people) & (exclude or set())), order
    else:
        n_train = int(round(protocol.train_fraction * len(order)))
        train, rest = order[:n_train], order[n_train:]
    n_known = int(round(protocol.known_fraction * len(rest)))
    known, unknown = rest[:n_known], rest[n_known:]
    half = len(unknown) // 2
    split = Split(sorted(train), sorted(known), sorted(unknown[:half]), sorted(unknown[half:]))
    if not protocol.model and len(split.train) < 4:
        raise EvaluationError(f"only {len(split.train)} training people; need at least 4")
    if len(split.known) < 2 or len(split.calib_unknown) < 1 or len(split.test_unknown) < 1:
        raise EvaluationError(
            f"too few people to evaluate: {len(split.known)} known, {len(split.calib_unknown)} "
            f"calibration unknowns, {len(split.test_unknown)} test unknowns from "
            f"{len(pool)} people; give a data set with more people"
        )
    return split


# ------------------------------------------------------------------ scoring


def probe_rows_of(
    names: list[str], split: Split, protocol: Protocol, fold: int
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Rows of the fold's (enrolled, mated probes, calibration non-mated, test non-mated).

    Each known person enrols ``protocol.enroll`` seeded-random images (at most all but one)
    and probes with the rest; every image of an unknown person is a non-mated search. The
    calibration searches are those of the calibration unknowns, plus, with
    ``calibrate_on="unknown+train"``, those of the people the encoder was trained on.
    """
    rng = np.random.default_rng([protocol.seed, fold, 7])
    names_arr = np.asarray(names, dtype=object)
    gallery_rows: list[int] = []
    mated_rows: list[int] = []
    for person in split.known:
        rows = np.flatnonzero(names_arr == person)
        if rows.size < 2:
            continue  # a person with one image has nothing left to probe with
        chosen = rng.permutation(rows)
        k = min(protocol.enroll, rows.size - 1)
        gallery_rows.extend(chosen[:k].tolist())
        mated_rows.extend(chosen[k:].tolist())
    calibrators = split.calib_unknown + (
        split.train if protocol.calibrate_on == "unknown+train" else []
    )
    calib_rows = np.flatnonzero(np.isin(names_arr, calibrators)).tolist()
    test_rows = np.flatnonzero(np.isin(names_arr, split.test_unknown)).tolist()
    if not gallery_rows or not mated_rows:
        raise EvaluationError("no known person has 2 or more images to enrol and probe")
    return gallery_rows, mated_rows, calib_rows, test_rows


def score_fold(
    embedded: EmbeddedSet,
    names: list[str],
    paths: list[str],
    split: Split,
    protocol: Protocol,
    fold: int,
    model_version: str | None,
) -> FoldScores:
    """Enrol the known people, search every probe, calibrate, and measure the test.

    Labelled photos (enrolment, verification pairs) contribute the person's face
    (:func:`person_faces`, ``protocol.multiple_faces``). A probe is searched with every usable
    face, as ``siamid identify`` answers it (:func:`photo_searches`): a mated probe is found
    when one of its faces is accepted as its person, a non-mated one is a false positive when
    any of its faces is accepted; calibration searches are scored the same way. Verification
    (EER, TAR at FAR) is the same comparison with a claimed identity: each probe photo against
    each enrolled person's template (``claim_distances``); ``pair_eer`` is the EER over every
    pair of single photos, as measured before.
    """
    from index.vector_index import VectorIndex
    from pipelines.services.report import ReportData, summary_figures

    if protocol.template is None or protocol.multiple_faces is None:
        raise EvaluationError("the protocol's scoring is open: call resolve_protocol first")
    distance = embedded.distance
    names_arr = np.asarray(names, dtype=object)
    gallery_rows, mated_rows, calib_rows, test_rows = probe_rows_of(names, split, protocol, fold)

    enrolled = person_faces(embedded, names_arr, gallery_rows, protocol.multiple_faces)
    index = VectorIndex.create("Flat", embedded.dim, distance)
    if protocol.template == "mean":
        # One template per person, filed under the first enrolled row's id.
        templates, template_ids = mean_templates(
            enrolled.vectors, names_arr[enrolled.rows], normalize=embedded.normalized
        )
        index.add(templates, np.asarray(enrolled.rows, dtype=np.int64)[template_ids])
    else:
        index.add(enrolled.vectors, np.asarray(enrolled.rows, dtype=np.int64))

    mated = photo_searches(index, embedded, names_arr, mated_rows)
    calib = photo_searches(index, embedded, names_arr, calib_rows)
    test = photo_searches(index, embedded, names_arr, test_rows)
    mated_dist, mated_rank = mated.mated(names_arr[mated_rows])
    threshold = operating_threshold(protocol.target_fpir, calib.best_dist)

    # Verification (EER, TAR at FAR): every probe photo (mated and test non-mated) claims each
    # enrolled person in turn and is compared with that person's template, as identification
    # compares it (claim_distances); a genuine claim is a mated photo's own person.
    people = sorted({str(n) for n in names_arr[enrolled.rows]})
    genuine, impostor = claim_distances(
        np.vstack([mated.per_identity(people), test.per_identity(people)]),
        names_arr[mated_rows + test_rows],
        people,
    )
    # Before issue 20's templates: every pair of single photos, each person's face in their
    # photos (no face, no pair): kept as ``pair_eer`` to compare with earlier runs.
    eval_rows = sorted(set(gallery_rows) | set(mated_rows) | set(test_rows))
    paired = person_faces(embedded, names_arr, eval_rows, protocol.multiple_faces)
    pair_genuine, pair_impostor = verification_pairs(
        paired.vectors, names_arr[paired.rows], distance
    )

    data = ReportData(
        genuine=genuine,
        impostor=impostor,
        mated_dist=mated_dist,
        mated_rank=mated_rank,
        nonmated_best=test.best_dist,
        threshold=threshold,
        target_fpir=protocol.target_fpir,
    )
    figures = summary_figures(data, DEFAULT_FPIR_TARGETS, DEFAULT_FAR_TARGETS)
    if pair_genuine.size and pair_impostor.size:
        figures["pair_eer"] = eer(pair_genuine, pair_impostor)[0]
    n_faces = embedded.n_faces()
    figures["n_calibration"] = float(calib.best_dist.size)
    figures["probes_several_faces"] = float(np.count_nonzero(n_faces[mated_rows + test_rows] > 1))
    figures["enrolled_several_faces"] = float(np.count_nonzero(n_faces[gallery_rows] > 1))
    figures["enrolled_not_largest"] = float(enrolled.not_largest)

    probe_rows = []
    for kind, rows, found in (("mated", mated_rows, mated), ("nonmated", test_rows, test)):
        for j, r in enumerate(rows):
            best, top = float(found.best_dist[j]), found.best_id[j]
            if kind == "mated":
                correct = bool(mated_rank[j] == 1 and mated_dist[j] <= threshold)
            else:
                correct = not best <= threshold
            probe_rows.append(
                {
                    "fold": fold,
                    "probe": paths[r],
                    "true_identity": names[r],
                    "kind": kind,
                    "faces": int(n_faces[r]),
                    "best_identity": top,
                    "best_distance": best,
                    "threshold": threshold,
                    "decision": "match" if best <= threshold else "unknown",
                    "correct": correct,
                }
            )
    return FoldScores(
        fold=fold,
        model_version=model_version,
        split=split,
        genuine=genuine,
        impostor=impostor,
        mated_dist=mated_dist,
        mated_rank=mated_rank,
        mated_ids=[names[r] for r in mated_rows],
        calib_nonmated=calib.best_dist,
        test_nonmated=test.best_dist,
        test_nonmated_ids=[str(x) for x in test.best_id],
        test_probe_rows=probe_rows,
        threshold=float(threshold),
        figures=figures,
    )
