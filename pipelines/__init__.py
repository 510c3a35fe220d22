"""Services, Prefect flows, the command line and the HTTP API: they compose ``siamese``,
``faces``, ``index`` and ``storage``.

Importing it changes nothing: Prefect's defaults are set by the entry points
(:func:`pipelines.settings.prefect_defaults`), before they import Prefect.
"""
