"""Vector index layer of siamid: FAISS indexes keyed by database ids, and a durable vector store.

This package exchanges plain data only (numpy arrays, int64 ids, paths, dataclasses) and must
not import torch, prefect, sqlalchemy or the ``siamese`` / ``storage`` / ``pipelines``
packages, so it can be used (and tested) without the model or the database.
"""

from __future__ import annotations

from .errors import (
    DimensionMismatchError,
    DuplicateIdError,
    IndexChecksumError,
    IndexCorruptError,
    IndexFileMissingError,
    IndexNotTrainedError,
    InvalidInputError,
    ReadOnlyIndexError,
    ShardCorruptError,
    TrainingDataError,
    UnsupportedIndexError,
    VectorIndexError,
    VectorRefError,
    VectorStoreError,
)
from .factory import FLAT_MAX_N, KINDS, choose_factory, default_nprobe, nlist_for, pq_m_for
from .vector_index import METRICS, Metric, VectorIndex
from .vector_store import Shard, ShardProblem, StoreReport, VectorStore, make_ref, parse_ref

__all__ = [
    "FLAT_MAX_N",
    "KINDS",
    "METRICS",
    "Metric",
    "VectorIndex",
    "VectorStore",
    "Shard",
    "ShardProblem",
    "StoreReport",
    "choose_factory",
    "default_nprobe",
    "nlist_for",
    "pq_m_for",
    "make_ref",
    "parse_ref",
    "VectorIndexError",
    "DimensionMismatchError",
    "DuplicateIdError",
    "IndexChecksumError",
    "IndexCorruptError",
    "IndexFileMissingError",
    "IndexNotTrainedError",
    "InvalidInputError",
    "ReadOnlyIndexError",
    "ShardCorruptError",
    "TrainingDataError",
    "UnsupportedIndexError",
    "VectorRefError",
    "VectorStoreError",
]
