"""Dynamic batching: concurrent requests gathered for a short window, answered by one call.

As vector databases and model servers do it: requests with the same key that arrive together
share one call, and the fixed costs (a thread hand-off, the GIL, faiss' and torch's per-call
work; for a flat index, BLAS instead of one distance loop per probe) are paid once per batch.

When no batch of that key is being answered, a request goes at once (with the others that
reached the batcher in the same turn of the event loop): a request alone is not delayed at
all. While one is being answered, arrivals gather; they go when it is answered, when the
first of them has waited ``window`` seconds (then beside it, on another compute slot), or
when they are ``max_size``, whichever comes first: no request waits for a batch longer than
the window. ``max_size`` 1 turns batching off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class MicroBatcher(Generic[K, I, O]):
    """``await submit(key, item)`` -> the answer to ``item``, computed by
    ``run(key, items)`` (which answers a list of the same length, in order) together with the
    other items of the same key that arrived within the window. Must be used from one event
    loop; ``run`` is awaited on it (it hands the work to a thread itself)."""

    def __init__(
        self,
        run: Callable[[K, list[I]], Awaitable[Sequence[O]]],
        *,
        window: float,
        max_size: int,
    ) -> None:
        if window < 0 or max_size < 1:
            raise ValueError(f"window must be >= 0 and max_size >= 1, got {window}, {max_size}")
        self.run, self.window, self.max_size = run, window, max_size
        self._pending: dict[K, list[tuple[I, asyncio.Future[O]]]] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._in_flight: dict[K, int] = {}
        #: Batches sent and items in them (for the metrics: mean batch size).
        self.batches = 0
        self.items = 0

    async def submit(self, key: K, item: I) -> O:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[O] = loop.create_future()
        batch = self._pending.setdefault(key, [])
        batch.append((item, future))
        if len(batch) >= self.max_size:
            self._flush(key)
        elif len(batch) == 1:
            idle = not self._in_flight.get(key)
            # Idle: at the end of this turn of the loop, so that requests ready now join.
            self._timers[key] = (
                loop.call_later(0, self._flush, key)
                if idle
                else loop.call_later(self.window, self._flush, key)
            )
        return await future

    def _flush(self, key: K) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(key, None)
        if not batch:
            return
        self.batches += 1
        self.items += len(batch)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._answer(key, batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, key: K, batch: list[tuple[I, asyncio.Future[O]]]) -> None:
        try:
            answers = await self.run(key, [item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(answers)} answers")
        except BaseException as exc:  # every waiting request hears of it, then it propagates
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._done(key)
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():  # a request whose client went away was cancelled
                future.set_result(answer)

    def _done(self, key: K) -> None:
        left = self._in_flight.pop(key, 1) - 1
        if left:
            self._in_flight[key] = left
        elif self._pending.get(key):
            self._flush(key)  # the requests that gathered meanwhile go now
