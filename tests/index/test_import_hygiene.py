"""index/ must stay usable without the model, the database and the orchestrator."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("torch", "prefect", "sqlalchemy", "siamese", "storage", "pipelines")


def test_index_imports_no_heavy_or_sibling_packages() -> None:
    code = (
        "import sys, index, index.vector_store, index.vector_index, index.factory\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"index imported {out.stdout.strip()}"
