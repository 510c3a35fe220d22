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

from pipelines.runtime import process_runtime
from pipelines.services import evaluation
from pipelines.services.evaluation import EmbeddedSet, FoldScores, Protocol, Split
from pipelines.services.training import TrainedModel

logger = logging.getLogger(__name__)


@task(cache_policy=NO_CACHE)
def load_dataset(data: str) -> tuple[list[str], list[str]]:
    return evaluation.load_dataset(Path(data))


@task(cache_policy=NO_CACHE)
def excluded_people(model: str | None) -> set[str]:
    return evaluation.excluded_people(process_runtime(), model) if model else set()


@task(cache_policy=NO_CACHE)
def train_fold(
    paths: list[str], names: list[str], people: list[str], fold: int, protocol: Protocol
) -> TrainedModel:
    return evaluation.train_fold_model(process_runtime(), paths, names, people, fold, protocol)


@task(cache_policy=NO_CACHE)
def embed_dataset(model: str, paths: list[str]) -> EmbeddedSet:
    return evaluation.embed_dataset(process_runtime(), model, paths)


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
    logger.info("%s", evaluation.fold_line(scores, protocol.folds))
    return scores


@task(cache_policy=NO_CACHE)
def write_outputs(folds: list[FoldScores], protocol: Protocol, report_dir: str) -> dict[str, Any]:
    metrics = evaluation.summarise(folds, protocol)
    report = evaluation.write_outputs(folds, metrics, Path(report_dir))
    model = protocol.model or (folds[0].model_version if folds else None)
    run_id = evaluation.record_run(process_runtime(), metrics, str(report), model)
    return {"evaluation_run": run_id, "report": str(report), "metrics": metrics}


@flow(name="evaluate")
def evaluate_flow(protocol: Protocol, report_dir: str) -> dict[str, Any]:
    """Identity-disjoint open-set evaluation over folds; writes the report and a row."""
    paths, names = load_dataset(protocol.data)
    exclude = excluded_people(protocol.model)
    folds: list[FoldScores] = []
    for fold in range(protocol.folds):
        split = evaluation.split_people(names, protocol, fold, exclude)
        if protocol.model:
            model = protocol.model
        else:
            model = train_fold(paths, names, split.train, fold, protocol).name
        embedded = embed_dataset(model, paths)
        folds.append(score(embedded, names, paths, split, protocol, fold, model))
    return write_outputs(folds, protocol, report_dir)
