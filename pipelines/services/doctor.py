"""``siamid doctor``: do the published index and SQL agree? ``--repair`` rebuilds the index.

The index can disagree with SQL for ordinary reasons (an identity removed since the last embed)
and for bad ones (a file altered, a crash in the middle of a hand edit); doctor reports both,
with the command that fixes each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.services.runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass
class DoctorReport:
    index_version: int | None = None
    model_version: int | None = None
    problems: list[str] = field(default_factory=list)
    index_only_ids: list[int] = field(default_factory=list)  # in the index, not in SQL
    sql_only_ids: list[int] = field(default_factory=list)  # in SQL, not in the index
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "index_version": self.index_version,
            "model_version": self.model_version,
            "problems": self.problems,
            "index_only": len(self.index_only_ids),
            "sql_only": len(self.sql_only_ids),
            "index_only_ids": self.index_only_ids[:100],
            "sql_only_ids": self.sql_only_ids[:100],
            "counts": self.counts,
        }


def diagnose(rt: Runtime) -> DoctorReport:
    from index.errors import VectorIndexError
    from index.vector_index import VectorIndex
    from storage.embeddings import live_embeddings
    from storage.indexes import published_index
    from storage.models import ModelVersion

    report = DoctorReport()
    with rt.sessions() as s:
        row = published_index(session=s)
        if row is None:
            report.problems.append("no published index: run `siamid embed`")
            return report
        report.index_version, report.model_version = row.id, row.model_version_id
        model = s.get_one(ModelVersion, row.model_version_id)
        live = live_embeddings(session=s, model_version_id=row.model_version_id)
        path, sha, recorded, dim = row.path, row.sha256, row.vector_count, model.embedding_dim
        distance = model.distance
    sql_ids = np.asarray(sorted(fid for fid, _ in live), dtype=np.int64)
    report.counts = {"sql_vectors": int(sql_ids.size), "recorded_vectors": int(recorded)}
    try:
        index = VectorIndex.load(path, expected_sha256=sha, expected_dim=dim)
    except VectorIndexError as exc:
        report.problems.append(f"{exc} (repair: `siamid doctor --repair`)")
        return report
    ids = np.sort(index.ids().astype(np.int64))
    report.counts["index_vectors"] = int(ids.size)
    if index.metric != distance:
        report.problems.append(
            f"index metric {index.metric} differs from the model's distance; run `siamid doctor "
            "--repair`"
        )
    if int(ids.size) != int(recorded):
        report.problems.append(
            f"index holds {ids.size} vectors but index_version {row.id} records {recorded}"
        )
    if np.unique(ids).size != ids.size:
        report.problems.append("index holds duplicate ids; run `siamid doctor --repair`")
    report.index_only_ids = np.setdiff1d(ids, sql_ids).tolist()
    report.sql_only_ids = np.setdiff1d(sql_ids, ids).tolist()
    if report.index_only_ids:
        report.problems.append(
            f"{len(report.index_only_ids)} vectors in the index have no live image in SQL "
            "(removed since the last embed?): run `siamid embed`"
        )
    if report.sql_only_ids:
        report.problems.append(
            f"{len(report.sql_only_ids)} embedded images are missing from the index: "
            "run `siamid embed`"
        )
    return report


def repair(rt: Runtime) -> dict[str, Any]:
    """Rebuild the published model's index from the vector store (no model run) and publish."""
    from pipelines.services.models import resolve_model
    from pipelines.services.publishing import build_and_publish
    from storage.indexes import published_index

    with rt.sessions() as s:
        row = published_index(session=s)
        ref = str(row.model_version_id) if row is not None else None
    model = resolve_model(rt.sessions, ref)
    result = build_and_publish(rt, model, full=True)
    return {
        "index_version": result.index_version_id,
        "vectors": result.vectors,
        "factory": result.factory,
    }
