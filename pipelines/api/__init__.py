"""The HTTP API (FastAPI): identification against the loaded index, gallery enrolment, keys.

``app.create_app`` builds the application; ``commands`` adds ``siamid api`` and
``siamid apikey`` to the command line. Routers (``routers/``) are thin: they parse, authorise
(``deps``), call a function of ``probes``, ``gallery`` or ``jobs``, and shape the answer with
``schemas``. ``live`` keeps the published index loaded and swaps it when a newer one appears.
"""
