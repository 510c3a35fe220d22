"""``python -m pipelines.cli`` runs the command line."""

from pipelines.cli.main import main

main()
