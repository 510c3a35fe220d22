"""How the command line logs: siamid's progress on stderr, Prefect's reports kept quiet for
user errors (the command prints those itself as one ``error:`` line)."""

from __future__ import annotations

import logging
import sys

#: Loggers whose INFO lines are siamid's progress (Prefect's own stay at WARNING).
PROGRESS_LOGGERS = ("pipelines", "siamese", "faces", "index", "storage")


def configure_logging(verbose: bool) -> None:
    """Progress on stderr: rich on a terminal, plain lines otherwise; DEBUG with --verbose."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_siamid", False):
            root.removeHandler(h)
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, show_level=verbose, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler._siamid = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in PROGRESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


class UserErrorFilter(logging.Filter):
    """Drops Prefect's report (with traceback) of a run that failed on a user error.

    The command line prints that error itself as one ``error:`` line; tracebacks are for bugs.
    """

    def __init__(self, errors: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.errors = errors
        found: set[str] = set()
        todo = list(errors)
        while todo:  # the classes and their subclasses, by the names Prefect's lines show
            cls = todo.pop()
            found.add(cls.__name__)
            todo.extend(cls.__subclasses__())
        self.names = tuple(sorted(found))

    def filter(self, record: logging.LogRecord) -> bool:
        from pipelines.services.errors import fault_message

        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:  # a full disk or a database that is down is one line too
            return not isinstance(exc, self.errors) and fault_message(exc) is None
        if record.name.startswith("prefect") and record.levelno >= logging.ERROR:
            return not any(name in record.getMessage() for name in self.names)
        return True


def quiet_flow_failures(errors: tuple[type[BaseException], ...]) -> None:
    """Attach :class:`UserErrorFilter` for ``errors`` to the handlers Prefect set up (call after
    importing a flow, which imports Prefect); with ``--verbose`` Prefect's reports stay."""
    if logging.getLogger("pipelines").level <= logging.DEBUG:
        return
    quiet = UserErrorFilter(errors)
    names = ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine")
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, UserErrorFilter) for f in handler.filters):
                handler.addFilter(quiet)
