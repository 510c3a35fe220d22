"""Prefect flows and the command line: they compose ``siamese``, ``index`` and ``storage``."""

from pipelines.settings import prefect_defaults

# Before any flow runs: no analytics, and time for the ephemeral API to start on a busy machine.
prefect_defaults()
