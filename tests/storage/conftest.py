"""Storage tests run against both databases: SQLite in a temporary folder and PostgreSQL
(``postgres_url``, tests/conftest.py), each migrated to the head revision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pipelines import migrations
from storage.db import make_engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'storage.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrations.upgrade(url)
    eng = make_engine(url)
    try:
        yield eng
    finally:
        eng.dispose()
