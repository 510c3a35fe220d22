"""The published index and its model, loaded once and swapped when a newer version is published.

A background thread asks SQL every ``poll_seconds`` which index version is published (and which
calibration sets the threshold): one indexed query on a one-row answer. When that changes, a
new :class:`~pipelines.services.identification.Identifier` is loaded beside the one in use and
then put in place by replacing one reference. A request takes the reference once, at its start,
and finishes on that version even if a swap happens meanwhile; the old index is freed when its
last request ends. Removed identities need no swap: at each poll the identifier in use asks
SQL (one aggregate row) whether identities it knows were removed, and never answers them again
(:class:`~pipelines.services.owners.Owners`); a removal through this process's API is applied
at once (:meth:`LiveIdentifier.check_removals`), one made elsewhere within ``poll_seconds``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.services.identification import Identifier
from pipelines.services.runtime import Runtime

logger = logging.getLogger(__name__)


class NotReadyError(Exception):
    """No index is loaded yet (none published, or loading it failed): try again later."""


@dataclass(frozen=True)
class Published:
    """What decides the answers: the published index version and the newest calibration."""

    index_version_id: int
    calibration_id: int | None


def published_now(rt: Runtime) -> Published | None:
    """The published index version and its model's newest calibration; None when none."""
    from storage.calibration import latest_calibration
    from storage.indexes import published_index

    with rt.sessions() as s:
        row = published_index(session=s)
        if row is None:
            return None
        cal = latest_calibration(session=s, model_version_id=row.model_version_id)
        return Published(row.id, cal.id if cal is not None else None)


class LiveIdentifier:
    """Owns the identifier that answers queries; thread-safe. ``current()`` never blocks."""

    def __init__(
        self,
        rt: Runtime,
        *,
        top_k: int = 5,
        poll_seconds: float = 1.0,
        on_swap: Callable[[Identifier], None] | None = None,
    ) -> None:
        self.rt, self.top_k, self.poll_seconds = rt, top_k, poll_seconds
        self.on_swap = on_swap
        self._current: Identifier | None = None
        self._loaded: Published | None = None
        self._reload = threading.Lock()  # one load at a time; readers never take it
        self._failed: Published | None = None
        self.last_error: str | None = None
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._current is not None

    def current(self) -> Identifier:
        ident = self._current  # one read of one reference: the request's version from now on
        if ident is None:
            raise NotReadyError(
                self.last_error
                or "no index is loaded yet; publish one with `siamid embed` (the service picks "
                "it up within seconds)"
            )
        return ident

    def refresh(self) -> bool:
        """Load the published version if it is not the one in use; True when swapped."""
        from pipelines.services.errors import user_errors

        with self._reload:
            wanted = published_now(self.rt)
            if wanted is None:
                self.last_error = "no published index; build one with `siamid embed`"
                return False
            if wanted == self._loaded or wanted == self._failed:
                return False
            try:
                ident = Identifier(self.rt, top_k=self.top_k)
                # before it serves, so that no search waits for one
                ident.load_mean_templates(previous=self._current)
            except user_errors() as exc:
                # Keep answering with the version in use; try again when SQL changes.
                self._failed, self.last_error = wanted, str(exc)
                logger.error("cannot load index version %d: %s", wanted.index_version_id, exc)
                return False
            previous = self._current
            self._current, self._loaded, self._failed, self.last_error = ident, wanted, None, None
            self.swaps += 1
        logger.info(
            "serving index version %d (model %s, %d vectors)%s",
            ident.index_version_id,
            ident.model.name,
            ident.index.ntotal,
            f", was {previous.index_version_id}" if previous is not None else "",
        )
        if self.on_swap is not None:
            self.on_swap(ident)
        return True

    def check_removals(self) -> int:
        """Stop answering identities removed in SQL; the number removed since the last look."""
        ident = self._current
        return 0 if ident is None else ident.refresh_removals()

    def start(self) -> None:
        """Load in the background (the server answers /healthz meanwhile), then poll."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="siamid-index-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _poll(self) -> None:
        from pipelines.services.errors import database_unavailable

        outage: str | None = None  # the reason while the database does not answer
        while not self._stop.is_set():
            try:
                if not self.refresh():
                    self.check_removals()
                if outage is not None:
                    logger.warning("the database answers again; polling resumed")
                outage = None
            except Exception as exc:  # a database hiccup must not end polling
                reason = database_unavailable(exc)
                if reason is None:
                    logger.exception("checking for a newer index version or removals failed")
                elif outage is None:  # one line per outage, not one per poll
                    logger.warning("checking for a newer index version: %s", reason)
                outage = reason or outage
            self._stop.wait(self.poll_seconds)
