"""The ``train`` flow: gallery images -> contrastive training -> a registered ``model_version``."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines.services import training
from pipelines.services.runtime import process_runtime
from pipelines.services.training import TrainedModel, TrainingSet, TrainOptions


@task(cache_policy=NO_CACHE)
def collect_training_set(data: str | None, options: TrainOptions) -> TrainingSet:
    return training.trainable_set(process_runtime(), Path(data) if data else None, options)


@task(cache_policy=NO_CACHE)
def train_model(ts: TrainingSet, options: TrainOptions) -> TrainedModel:
    return training.train_model(process_runtime(), ts, options)


@flow(name="train")
def train_flow(data: str | None = None, options: TrainOptions | None = None) -> TrainedModel:
    """Train an encoder on the gallery (or a folder, imported first) and register it."""
    options = options or TrainOptions()
    options.configs()  # a bad combination fails before any work
    options.crop()
    ts = collect_training_set(data, options)
    return train_model(ts, options)
