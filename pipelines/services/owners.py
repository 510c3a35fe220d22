"""Who owns each vector of a loaded index: in memory, so a search asks SQL nothing.

Read once when an index version is loaded: every face image's identity, as sorted numpy
arrays (face image id -> identity slot), and every identity's id and name. A search hit's
owner is then a binary search, and grouping a batch of search rows per identity is a few
numpy calls.

SQL stays the source of truth for removals: :meth:`Owners.refresh` asks SQL for a one-row
fingerprint of the identities known at load (their count and newest ``created_at``) and, only
when it changed, reads their names again; identities gone from SQL are then never answered
(removing an identity is the only way rows leave the gallery). The API's poller calls it every
``poll_seconds``, and the removal route right after its commit.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One candidate identity of one search row: its slot, best distance and that image."""

    slot: int
    distance: float
    face_image_id: int


class Owners:
    """face image id -> identity, for the ids one index version may return."""

    def __init__(
        self,
        face_ids: np.ndarray,
        identity_ids_of_faces: np.ndarray,
        names: dict[int, str],
        fingerprint: tuple[int, str],
    ) -> None:
        order = np.argsort(face_ids, kind="stable")
        self.face_ids = np.asarray(face_ids, np.int64)[order]
        self.identity_ids = np.asarray(sorted(names), np.int64)
        self.names = [names[int(i)] for i in self.identity_ids]
        owner = np.asarray(identity_ids_of_faces, np.int64)[order]
        pos = np.searchsorted(self.identity_ids, owner)
        pos = np.minimum(pos, max(len(self.identity_ids) - 1, 0))
        known = self.identity_ids[pos] == owner if len(self.identity_ids) else owner < 0
        #: identity slot of each face id (-1: its identity is not among ``names``).
        self.slots = np.where(known, pos, -1).astype(np.int32)
        self.through_id = int(self.identity_ids[-1]) if len(self.identity_ids) else 0
        #: Replaced, never changed in place: a search reads it once and sees one state.
        self.alive = np.ones(len(self.identity_ids), bool)
        self._fingerprint = fingerprint
        self._refresh = threading.Lock()

    @classmethod
    def load(cls, session: Session) -> Owners:
        from storage.embeddings import identities_fingerprint, identity_names, image_owner_table

        faces, owners = image_owner_table(session=session)
        through = max(owners, default=0)
        # The fingerprint first: a removal after it shows up at the next refresh.
        fingerprint = identities_fingerprint(session=session, through_id=through)
        names = identity_names(session=session, through_id=through)
        return cls(np.asarray(faces, np.int64), np.asarray(owners, np.int64), names, fingerprint)

    @property
    def removed(self) -> int:
        """Identities removed in SQL since this table was read."""
        return int((~self.alive).sum())

    def refresh(self, session: Session) -> int:
        """Mark the identities removed in SQL since the last look; the number removed now."""
        from storage.embeddings import identities_fingerprint, identity_names

        with self._refresh:
            fingerprint = identities_fingerprint(session=session, through_id=self.through_id)
            if fingerprint == self._fingerprint:
                return 0
            present = identity_names(session=session, through_id=self.through_id)
            alive = np.fromiter(
                (
                    present.get(int(i)) == n
                    for i, n in zip(self.identity_ids, self.names, strict=True)
                ),
                bool,
                len(self.names),
            )
            newly = int((self.alive & ~alive).sum())
            self.alive, self._fingerprint = self.alive & alive, fingerprint
        if newly:
            logger.info(
                "%d identities removed since the index was loaded: no longer answered", newly
            )
        return newly

    def slot_of(self, ids: np.ndarray) -> np.ndarray:
        """Identity slot of each face image id (any shape); -1 for faiss' -1 padding, ids
        unknown at load, and identities removed since."""
        ids = np.asarray(ids, np.int64)
        alive = self.alive  # one read: the whole batch sees one state
        if not len(self.face_ids):
            return np.full(ids.shape, -1, np.int32)
        pos = np.minimum(np.searchsorted(self.face_ids, ids), len(self.face_ids) - 1)
        slot = np.where(self.face_ids[pos] == ids, self.slots[pos], -1)
        slot = np.where(slot >= 0, slot, 0)  # a valid index for the alive look-up
        ok = (self.face_ids[pos] == ids) & (self.slots[pos] >= 0) & alive[slot]
        return np.where(ok, slot, -1).astype(np.int32)

    def group(
        self, distances: np.ndarray, ids: np.ndarray, top_k: int | np.ndarray
    ) -> list[list[Hit]]:
        """Search rows ``[n, k]`` -> per row the ``top_k`` (per row, or one for all) identities
        by best distance, best first; ties keep search order. Hits whose owner is unknown or
        removed, faiss' -1 padding and non-finite distances are skipped.

        The answer of :func:`~pipelines.services.scoring.group_by_identity` on each row, for a
        whole batch at once.
        """
        n = distances.shape[0]
        slots = self.slot_of(ids)
        valid = (slots >= 0) & np.isfinite(distances)
        rows, cols = np.nonzero(valid)  # row-major: search order within a row
        width = max(len(self.names), 1)
        key = rows.astype(np.int64) * width + slots[rows, cols]
        _, first = np.unique(key, return_index=True)  # each identity's first hit in its row
        r, c = rows[first], cols[first]
        d = distances[r, c]
        order = np.lexsort((c, d, r))  # by row, then distance, then search position
        r, c, d = r[order], c[order], d[order]
        starts = np.searchsorted(r, np.arange(n + 1))
        rank = np.arange(len(r)) - starts[r]
        limit = np.broadcast_to(np.asarray(top_k), (n,))
        keep = rank < limit[r]
        r, c, d = r[keep], c[keep], d[keep]
        s, f = slots[r, c].tolist(), ids[r, c].tolist()
        d_list = d.tolist()
        bounds = np.searchsorted(r, np.arange(n + 1)).tolist()
        return [
            [Hit(s[j], d_list[j], f[j]) for j in range(bounds[i], bounds[i + 1])] for i in range(n)
        ]
