"""Evaluation runs: protocol, figures and report path. Never commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from storage.models import EvaluationRun


def add_evaluation_run(
    *,
    session: Session,
    model_version_id: int | None,
    index_version_id: int | None,
    protocol: dict[str, Any],
    metrics: dict[str, Any],
    report_path: str | None,
) -> EvaluationRun:
    row = EvaluationRun(
        model_version_id=model_version_id,
        index_version_id=index_version_id,
        protocol=protocol,
        metrics=metrics,
        report_path=report_path,
    )
    session.add(row)
    session.flush()
    return row
