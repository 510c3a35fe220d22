"""The steps of an evaluation that need a runtime: the protocol's open choices resolved, the
data set detected, a fold's encoder trained (or the pretrained one registered), every face
embedded, the people a given model saw."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

from pipelines.services.crops import CropSpec
from pipelines.services.encoding import encode_paths
from pipelines.services.evaluation import (
    EvalData,
    EvaluationError,
    Protocol,
)
from pipelines.services.models import resolve_model
from pipelines.services.photo_faces import EmbeddedSet, embed_every_face
from pipelines.services.refusals import Refusal
from pipelines.services.runtime import Runtime
from pipelines.services.training import TrainedModel, TrainingSet, TrainOptions, train_model

logger = logging.getLogger(__name__)


#: Epochs of a fold's encoder when --epochs is not given (see ``fold_train_config``).
FOLD_EPOCHS = 20


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
    embedded, errors = embed_every_face(
        encoder, model, data.paths, data.usable_faces(), rt.limits, batch_size=128
    )
    _refuse_errors(errors, data.paths)
    return embedded


def _refuse_errors(errors: dict[int, Refusal], paths: list[str]) -> None:
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
