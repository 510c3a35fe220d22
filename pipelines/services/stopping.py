"""Stopping a run between chunks: SIGTERM asks, the run answers at its next chunk boundary.

A chunk commits its rows together (see :mod:`pipelines.services.embedding`), so a run killed
mid-chunk loses nothing but that chunk's work. Stopping between chunks loses nothing at all and
says so: the first SIGTERM is recorded, the chunk in progress finishes, and the run ends with
:class:`StopRequested` before the next one. A second SIGTERM goes to the handler that was there
before (Prefect's, which ends the run at once).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from pipelines.services.errors import SiamidError

logger = logging.getLogger(__name__)


class StopRequested(SiamidError):
    """SIGTERM asked the run to stop; what it committed stays, the rest is still pending."""


class StopOnSigterm:
    """While entered in the main thread, SIGTERM sets :attr:`requested` instead of ending the
    process; :meth:`check` raises :class:`StopRequested` once it is set. Elsewhere (a worker
    thread cannot install a handler) it changes nothing."""

    def __init__(self, resume: str) -> None:
        self.resume = resume  # what finishes the work, e.g. "run `siamid embed` again"
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._restored())
        self._installed = False

    def _restored(self) -> Any:
        return signal.SIG_DFL if self._previous is None else self._previous

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGTERM, self._restored())  # a second SIGTERM: at once
        logger.warning("SIGTERM: stopping after the chunk in progress (again: stop at once)")

    def check(self, done: str) -> None:
        """Raise :class:`StopRequested` when SIGTERM came; ``done`` says how far the run got."""
        if self.requested:
            raise StopRequested(
                f"stopped on SIGTERM after {done}; that work is committed and the rest is "
                f"still pending: {self.resume} to finish"
            )
