"""The ``siamid`` command line: one module per command group, composed in :mod:`.main`.

Commands call services or flows (never the HTTP API); heavy imports (torch, faiss, prefect)
happen inside them, so ``siamid --help`` stays quick.
"""

from pipelines.cli.main import app, main

__all__ = ["app", "main"]
