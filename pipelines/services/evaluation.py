"""Open-set evaluation on an identity-disjoint protocol: splits, scoring, summary, outputs.

Per fold (seeded), the people of the data set are split into:
- **train**: they train the fold's encoder (unless ``--model`` is given, in which case the
  model's own training and validation people are excluded from evaluation);
- **known**: enrolled with K images each; their other images are mated probes;
- **unknown, calibration half**: non-mated searches that set the threshold at the target FPIR;
- **unknown, test half**: non-mated test searches, never seen by calibration.
So no person used for training appears in evaluation, and the threshold is calibrated on people
separate from the test probes. Figures are averaged over folds with their spread.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from faces.face import Face
from pipelines.services.crops import CropSpec
from pipelines.services.encoding import encode_paths
from pipelines.services.errors import SiamidError
from pipelines.services.models import resolve_model
from pipelines.services.photo_faces import (
    EmbeddedSet,
    PersonFaces,
    PhotoSearches,
    mean_templates,
    person_faces,
    photo_searches,
)
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import (
    CALIBRATE_ON,
    MULTIPLE_FACES,
    TEMPLATES,
    operating_threshold,
    verification_pairs,
)
from pipelines.services.training import TrainedModel, TrainingSet, TrainOptions, train_model
from siamese.openset import (
    DEFAULT_FAR_TARGETS,
    DEFAULT_FPIR_TARGETS,
    DEFAULT_TARGET_FPIR,
    dir_key,
    tar_key,
)

__all__ = ["EmbeddedSet", "PersonFaces", "PhotoSearches", "mean_templates", "person_faces"]

logger = logging.getLogger(__name__)

#: How a photo with several usable faces is scored (metrics.json, the report, the README).
SEVERAL_FACES_RULE = (
    "every usable face of a probe is a search, as `siamid identify` answers it: a mated probe is "
    "found when one of its faces is accepted as its person; a non-mated probe is a false "
    "positive when any of its faces is accepted; an enrolled photo contributes the person's "
    "face (--multiple-faces)"
)

#: Epochs of a fold's encoder when --epochs is not given (see ``fold_train_config``).
FOLD_EPOCHS = 20


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
    any of its faces is accepted; calibration searches are scored the same way.
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

    # Verification pairs: each person's face in their photos (no face, no pair to measure).
    eval_rows = sorted(set(gallery_rows) | set(mated_rows) | set(test_rows))
    paired = person_faces(embedded, names_arr, eval_rows, protocol.multiple_faces)
    genuine, impostor = verification_pairs(paired.vectors, names_arr[paired.rows], distance)

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


def summarise(folds: list[FoldScores], protocol: Protocol) -> dict[str, Any]:
    """metrics.json: means over folds (with std and per-fold values) in the documented keys."""

    def stat(key: str) -> tuple[float, float]:
        vals = [f.figures[key] for f in folds if key in f.figures]
        if not vals:
            return float("nan"), float("nan")
        return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0

    metrics: dict[str, Any] = {
        "rank1": stat("rank1")[0],
        "rank5": stat("rank5")[0],
        "dir_at_fpir": {str(t): stat(dir_key(t))[0] for t in DEFAULT_FPIR_TARGETS},
        "eer": stat("eer")[0],
        "tar_at_far": {str(t): stat(tar_key(t))[0] for t in DEFAULT_FAR_TARGETS},
        "threshold": stat("threshold")[0],
        "target_fpir": protocol.target_fpir,
        "realised_fpir": stat("fpir")[0],
        "realised_fnir": stat("fnir")[0],
        "std": {
            "rank1": stat("rank1")[1],
            "eer": stat("eer")[1],
            "dir_at_fpir": {str(t): stat(dir_key(t))[1] for t in DEFAULT_FPIR_TARGETS},
            "realised_fpir": stat("fpir")[1],
            "realised_fnir": stat("fnir")[1],
        },
        "cmc": np.mean([_cmc(f, 10) for f in folds], axis=0).tolist(),
        # per fold, means over folds
        "several_faces": {
            "probes": stat("probes_several_faces")[0],
            "enrolled": stat("enrolled_several_faces")[0],
            "enrolled_not_largest": stat("enrolled_not_largest")[0],
            "scored_as": SEVERAL_FACES_RULE,
        },
        "folds": [
            {
                "fold": f.fold,
                "model_version": f.model_version,
                **f.figures,
                "people": {k: len(v) for k, v in asdict(f.split).items()},
            }
            for f in folds
        ],
        "protocol": asdict(protocol),
    }
    return metrics


def _cmc(f: FoldScores, max_rank: int) -> np.ndarray:
    from siamese.openset import cmc

    return cmc(f.mated_rank, max_rank)


def write_outputs(folds: list[FoldScores], metrics: dict[str, Any], report_dir: Path) -> Path:
    """metrics.json, per-probe results (Parquet and CSV) and report.html."""
    import pandas as pd

    from pipelines.services.report import ReportData, write_report
    from siamese.openset import per_identity_errors

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    probes = pd.DataFrame([row for f in folds for row in f.test_probe_rows])
    probes.to_parquet(report_dir / "probes.parquet", index=False)
    probes.to_csv(report_dir / "probes.csv", index=False)

    # Each fold has its own encoder, so distances of different folds are on different scales:
    # the plots show the first fold alone, and the table gives every figure as a fold mean.
    first = folds[0]
    data = ReportData(
        genuine=first.genuine,
        impostor=first.impostor,
        mated_dist=first.mated_dist,
        mated_rank=first.mated_rank,
        nonmated_best=first.test_nonmated,
        threshold=first.threshold,
        target_fpir=metrics["target_fpir"],
        folds=[f.figures for f in folds],
        per_identity=per_identity_errors(
            first.threshold,
            first.mated_ids,
            first.mated_dist,
            first.mated_rank,
            first.test_nonmated,
            first.test_nonmated_ids,
        ),
        title=f"siamid open-set evaluation: {Path(metrics['protocol']['data']).name}, "
        f"{len(folds)} fold(s)",
    )
    keys = set.intersection(*(set(f.figures) for f in folds))
    table: dict[str, Any] = {k: float(np.mean([f.figures[k] for f in folds])) for k in keys}
    table["protocol"] = metrics["protocol"]
    table["note"] = (
        "figures: means over folds (the last column adds the std); plots and the per-identity "
        "table: fold 1 only, since every fold trains its own encoder and distance scales differ"
    )
    return write_report(report_dir, table, data)


def fold_options(protocol: Protocol, fold: int, crop: CropSpec) -> TrainOptions:
    """The training choices of a fold's encoder: the defaults, the protocol's backbone, and
    ``FOLD_EPOCHS`` without an identity hold-out (:func:`train_fold_model`)."""
    default_epochs = None if protocol.backbone == "dlib-resnet" else FOLD_EPOCHS  # zero-shot
    return TrainOptions(
        seed=protocol.seed + fold,
        epochs=default_epochs if protocol.epochs is None else protocol.epochs,
        members=protocol.members,
        backbone=protocol.backbone,
        faces=crop.faces,
        tune=protocol.tune,
        flip_average=protocol.flip_average,
        template=protocol.template,
        multiple_faces=protocol.multiple_faces,
    )


@dataclass
class EvalData:
    """The images of an evaluation data set, with the faces to crop from each in detect mode.

    In detect mode every photo stays in the protocol. ``faces[i]`` is the detector's choice
    (the largest usable face; training reads it), ``photo_faces[i]`` every usable face of the
    photo, largest first: each one is embedded, a probe searches with all of them and a
    labelled photo contributes the person's (:func:`person_faces`). A photo without a usable
    face (``no_face`` counts them by outcome) is answered as siamid would: it enrols nothing,
    trains nothing, and as a search it finds no one (a miss if its person is enrolled, a
    correct rejection if not). Verification pairs (EER) are measured between faces only.
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


def resolve_protocol(rt: Runtime, protocol: Protocol) -> Protocol:
    """The protocol with the scoring it leaves open filled in: the ``--model``'s recorded
    scoring, else what the fold encoders will record (their backbone's defaults); an asked
    ``--flip-average`` that differs from a given model's is refused."""
    if protocol.model:
        scoring = resolve_model(rt.sessions, protocol.model).scoring
        if protocol.flip_average is not None and protocol.flip_average != scoring.flip_average:
            raise EvaluationError(
                f"model {protocol.model} records flip_average={scoring.flip_average}; drop "
                "--flip-average / --no-flip-average or train a model with the other setting"
            )
    else:
        scoring = fold_options(protocol, 0, crop_of(rt, protocol)).scoring()
    return replace(
        protocol,
        template=protocol.template or scoring.template,
        flip_average=scoring.flip_average,
        multiple_faces=protocol.multiple_faces or scoring.multiple_faces,
    )


def crop_of(rt: Runtime, protocol: Protocol) -> CropSpec:
    """The protocol's crop mode; with ``--model`` the model's, refusing a different ``--faces``."""
    if protocol.model:
        model = resolve_model(rt.sessions, protocol.model)
        model.crop.check(protocol.faces, model.name)
        return model.crop
    return TrainOptions(backbone=protocol.backbone, faces=protocol.faces).crop()


def detect_dataset(rt: Runtime, paths: list[str], names: list[str]) -> EvalData:
    """Detect the faces of every image (each usable one); all images stay."""
    from faces.face import is_too_small
    from pipelines.services.detection import detect_paths

    found = detect_paths(paths, rt.limits, cache=rt.settings.detections_cache_dir)
    no_face = dict(Counter(f.outcome for f in found if f.face is None))
    if no_face:
        logger.info(
            "%d of %d photos have no face to align (%s): they enrol nothing, and as searches "
            "they find no one",
            sum(no_face.values()),
            len(found),
            ", ".join(f"{k} {v}" for k, v in sorted(no_face.items())),
        )
    usable = [[f for f in photo.faces if not is_too_small(f)] for photo in found]
    return EvalData(list(paths), list(names), [f.face for f in found], no_face, usable)


def train_fold_model(
    rt: Runtime,
    data: EvalData,
    people: list[str],
    fold: int,
    protocol: Protocol,
    crop: CropSpec,
) -> TrainedModel:
    """Train and register the fold's encoder on its training people only.

    Every training person trains (no identity hold-out for early stopping): the evaluation
    itself is the held-out test, and on AT&T (6 folds, ``bench/openset_att.py``) DIR at FPIR 1%
    was 0.72 with a hold-out of a quarter of 20 people and 0.78-0.79 without it at 10-30 epochs.
    """
    rows = data.with_face()  # a photo without a face trains nothing
    faces = None if data.faces is None else [data.faces[i] for i in rows]
    ts = TrainingSet([data.paths[i] for i in rows], [data.names[i] for i in rows], faces)
    ts = ts.only(set(people))
    return train_model(
        rt,
        ts,
        fold_options(protocol, fold, crop),
        hold_out=False,
        name_prefix="eval-",
        purpose=f"evaluate fold {fold}",
    )


def embed_dataset(rt: Runtime, model_ref: str, data: EvalData) -> EmbeddedSet:
    """Vectors for every usable face of every image (in memory: evaluation does not touch the
    gallery's index); whole-image mode: one per image."""
    model = resolve_model(rt.sessions, model_ref)
    encoder = rt.encoders.get(model)
    normalized = bool(encoder.config.normalize)
    if data.faces is None:
        enc = encode_paths(encoder, data.paths, rt.limits, spec=model.crop, batch_size=128)
        _refuse_errors(enc.errors, data.paths)
        return EmbeddedSet.one_per_row(enc.dense(len(data.paths)), model.distance, normalized)
    jobs = [(i, f) for i, faces in enumerate(data.usable_faces()) for f in faces]
    enc = encode_paths(
        encoder,
        [data.paths[i] for i, _ in jobs],
        rt.limits,
        spec=model.crop,
        faces=[f for _, f in jobs],
        batch_size=128,
        workers=0,
    )
    _refuse_errors(enc.errors, [data.paths[i] for i, _ in jobs])
    counts = np.bincount([i for i, _ in jobs], minlength=len(data.paths))
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return EmbeddedSet(enc.dense(len(jobs)), start, model.distance, normalized)


def _refuse_errors(errors: dict[int, str], paths: list[str]) -> None:
    if errors:
        bad = ", ".join(f"{paths[k]} ({e})" for k, e in list(errors.items())[:3])
        raise EvaluationError(f"{len(errors)} images could not be embedded, e.g. {bad}")


def excluded_people(rt: Runtime, model_ref: str) -> set[str]:
    """The people a given model was trained or validated on: never evaluated."""
    from storage.registry import get_model_version

    with rt.sessions() as s:
        mv = get_model_version(session=s, ref=model_ref)
        v = (mv.metrics or {}).get("validation") or {}
    return set(v.get("train_identities", [])) | set(v.get("val_identities", []))


def record_run(rt: Runtime, metrics: dict[str, Any], report: str, model_ref: str | None) -> int:
    """An ``evaluation_run`` row with the metrics and the report's path."""
    from storage.evaluations import add_evaluation_run
    from storage.registry import get_model_version

    with rt.sessions.begin() as s:
        mv = get_model_version(session=s, ref=model_ref) if model_ref else None
        row = add_evaluation_run(
            session=s,
            model_version_id=mv.id if mv else None,
            index_version_id=None,
            protocol=metrics["protocol"],
            metrics={k: v for k, v in metrics.items() if k != "protocol"},
            report_path=report,
        )
        return row.id


def headline_dir(metrics: dict[str, Any]) -> float:
    """DIR at the default target FPIR from metrics.json (what the command line and demo print)."""
    return float(metrics["dir_at_fpir"][str(DEFAULT_TARGET_FPIR)])


def fold_line(f: FoldScores, folds: int) -> str:
    """One line of progress per fold."""
    return (
        f"fold {f.fold + 1}/{folds}: rank-1 {f.figures['rank1']:.3f}, "
        f"DIR@FPIR=1% {f.figures.get(dir_key(DEFAULT_TARGET_FPIR), float('nan')):.3f}, "
        f"EER {100 * f.figures.get('eer', float('nan')):.2f}%, threshold "
        f"{f.threshold:.4f}, realised FPIR {f.figures.get('fpir', float('nan')):.3f}"
    )
