"""Keyset paging of a run's work list: pending images are read a page at a time, by id.

A run first counts what it has to do and notes the largest pending id (``last_id``), then reads
the rows ``id > after ORDER BY id LIMIT size``, each page after the last id of the one before:
memory holds one page (a chunk), not the gallery (tens of GB at 100M images). Work done on a
page (a chunk embedded, its detections stored) never moves a row of a later page, so the pages
are the chunks one listing would have made; images imported during the run (ids past
``last_id``) wait for the next run, as they did when the list was read at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

Row = TypeVar("Row", bound=tuple[Any, ...])

#: (after_id, limit) -> up to ``limit`` rows with an id over ``after_id`` (None: from the
#: start), by id; a row's first field is its id.
PageReader = Callable[[int | None, int], Sequence[Row]]


@dataclass(frozen=True)
class WorkPlan:
    """``todo`` rows to work on, ids up to ``last_id`` (None when there is nothing to do)."""

    todo: int
    last_id: int | None

    def chunk_count(self, size: int) -> int:
        """How many chunks of ``size`` the rows make (the last may be smaller)."""
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, got {size}")
        return -(-self.todo // size)


def keyset_pages(read: PageReader[Row], size: int, *, last_id: int | None) -> Iterator[list[Row]]:
    """Pages of ``size`` rows (the last may be smaller, none is empty), by id, up to ``last_id``.

    Each page is read when the one before has been taken (a generator): a caller that submits
    chunks as work frees up holds only the pages in flight. A bad ``size`` fails here, before
    any page is read.
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return _pages(read, size, last_id)


def _pages(read: PageReader[Row], size: int, last_id: int | None) -> Iterator[list[Row]]:
    if last_id is None:
        return
    after: int | None = None
    while True:
        page = read(after, size)
        within = [row for row in page if int(row[0]) <= last_id]
        if within:
            yield within
        if len(within) < size:
            return
        after = int(within[-1][0])
