"""Shared fixtures. Thread counts are pinned: on a shared 2-core machine torch with 2 threads
can run 20x slower than with 1 when another process is busy."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ (plain scripts) holds helpers the tests share
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import torch  # noqa: E402

torch.set_num_threads(1)
try:
    import faiss  # noqa: E402

    faiss.omp_set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

from tests.support import ATT_FACES, need_dir, postgres_admin_url  # noqa: E402


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The command line (``main()``, or typer's runner through the global options) attaches a
    handler to the stderr a test captured; drop it after every test, or a later log line meets
    a closed stream ("--- Logging error ---")."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def att_faces() -> Path:
    """The AT&T faces beside the repo (skip when ../shared is absent, fail under CI=true)."""
    return need_dir(ATT_FACES)


@pytest.fixture
def siamid_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway SIAMID_HOME with the default embedded SQLite database."""
    home = tmp_path / "siamid-home"
    monkeypatch.setenv("SIAMID_HOME", str(home))
    monkeypatch.delenv("SIAMID_DATABASE_URL", raising=False)
    return home


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    Locally the test skips when SIAMID_TEST_POSTGRES_URL is unset; under CI=true that is a
    failure, since .ci/run starts PostgreSQL and exports the URL.
    """
    admin_url = postgres_admin_url()
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"siamid_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
