"""The ``evaluate`` flow: an identity-disjoint open-set protocol, NIST metrics, an HTML report.

The protocol is described in :mod:`pipelines.services.evaluation`; each fold trains (unless a
model is given), embeds and scores in its own tasks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines.services import eval_outputs, eval_steps, evaluation
from pipelines.services.crops import CropSpec
from pipelines.services.evaluation import EmbeddedSet, EvalData, FoldScores, Protocol, Split
from pipelines.services.runtime import process_runtime
from pipelines.services.training import TrainedModel

logger = logging.getLogger(__name__)


@task(cache_policy=NO_CACHE)
def load_dataset(protocol: Protocol) -> tuple[EvalData, CropSpec]:
    """The data set's images, with their detected faces when the crop mode is ``detect``."""
    rt = process_runtime()
    crop = eval_steps.crop_of(rt, protocol)
    paths, names = evaluation.load_dataset(Path(protocol.data))
    if crop.detect:
        return eval_steps.detect_dataset(rt, paths, names), crop
    return EvalData(paths, names), crop


@task(cache_policy=NO_CACHE)
def resolve_protocol(protocol: Protocol) -> Protocol:
    return eval_steps.resolve_protocol(process_runtime(), protocol)


@task(cache_policy=NO_CACHE)
def excluded_people(model: str | None) -> set[str]:
    return eval_steps.excluded_people(process_runtime(), model) if model else set()


@task(cache_policy=NO_CACHE)
def train_fold(
    data: EvalData, people: list[str], fold: int, protocol: Protocol, crop: CropSpec
) -> TrainedModel:
    return eval_steps.train_fold_model(process_runtime(), data, people, fold, protocol, crop)


@task(cache_policy=NO_CACHE)
def embed_dataset(model: str, data: EvalData) -> EmbeddedSet:
    return eval_steps.embed_dataset(process_runtime(), model, data)


@task(cache_policy=NO_CACHE)
def score(
    embedded: EmbeddedSet,
    names: list[str],
    paths: list[str],
    split: Split,
    protocol: Protocol,
    fold: int,
    model_version: str,
) -> FoldScores:
    scores = evaluation.score_fold(embedded, names, paths, split, protocol, fold, model_version)
    logger.info("%s", eval_outputs.fold_line(scores, protocol.folds))
    return scores


@task(cache_policy=NO_CACHE)
def write_outputs(
    folds: list[FoldScores], protocol: Protocol, data: EvalData, report_dir: str
) -> dict[str, Any]:
    metrics = eval_outputs.summarise(folds, protocol)
    if data.faces is not None:
        metrics["faces"] = {
            "images": len(data.paths),
            "with_face": len(data.with_face()),
            "without_face": data.no_face,
            "found_by_cnn": sum(f is not None and f.found_by == "cnn" for f in data.faces),
            "scored_as": "no face: enrols nothing; as a search, no answer (mated: a miss)",
        }
    report = eval_outputs.write_outputs(folds, metrics, Path(report_dir))
    model = protocol.model or (folds[0].model_version if folds else None)
    run_id = eval_outputs.record_run(process_runtime(), metrics, str(report), model)
    return {"evaluation_run": run_id, "report": str(report), "metrics": metrics}


@flow(name="evaluate")
def evaluate_flow(protocol: Protocol, report_dir: str) -> dict[str, Any]:
    """Identity-disjoint open-set evaluation over folds; writes the report and a row."""
    protocol = resolve_protocol(protocol)
    data, crop = load_dataset(protocol)
    exclude = excluded_people(protocol.model)
    folds: list[FoldScores] = []
    for fold in range(protocol.folds):
        split = evaluation.split_people(data.names, protocol, fold, exclude)
        if protocol.model:
            model = protocol.model
        else:
            model = train_fold(data, split.train, fold, protocol, crop).name
        embedded = embed_dataset(model, data)
        folds.append(score(embedded, data.names, data.paths, split, protocol, fold, model))
    return write_outputs(folds, protocol, data, report_dir)
