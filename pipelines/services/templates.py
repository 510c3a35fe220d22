"""Mean templates of the identities of one loaded index version (template ``mean``).

A search re-scores its candidate identities by the distance to each one's mean template
(:func:`~pipelines.services.scoring.mean_template`). The templates of a loaded version never
change (removals are :class:`~pipelines.services.owners.Owners`' job), so they are kept:

- :meth:`MeanTemplates.get` reads an identity's the first time it is a candidate (SQL for its
  vector refs, then the vector store);
- :meth:`MeanTemplates.load_all` reads every identity's at once, before a version serves (the
  HTTP service), so that no search waits for one. Given the version served before (same
  model), it keeps that one's templates of the identities whose vectors did not change (the
  same images, none written since it was built) and reads only the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from pipelines.services.models import LoadedEncoder, ModelRef
from pipelines.services.owners import Owners
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import mean_template, mean_templates

#: Identities read per SQL query when templates are read identity by identity.
CHUNK = 1000
#: Above this share of identities changed since the version before (and over one chunk of
#: them), all are read at once.
BULK_SHARE = 0.1


class MeanTemplates:
    """identity id -> mean template, for one loaded index version."""

    def __init__(
        self,
        rt: Runtime,
        model: ModelRef,
        owners: Owners,
        lookups: sessionmaker[Session],
        *,
        encoder: LoadedEncoder | None,
        built_at: datetime | None,
    ) -> None:
        self.rt, self.model, self.owners, self.lookups = rt, model, owners, lookups
        self.encoder, self.built_at = encoder, built_at
        self.cached: dict[int, np.ndarray] = {}

    @property
    def normalize(self) -> bool:
        """Templates of unit length when the model's vectors are (asked only when one is made:
        an identifier for pre-embedded probes loads no encoder)."""
        assert self.encoder is not None, "mean templates need the model's encoder"
        return bool(self.encoder.config.normalize)

    def _store(self):  # type: ignore[no-untyped-def]  # -> index.vector_store.VectorStore
        from index.vector_store import VectorStore

        return VectorStore(self.rt.settings.vector_store_dir(self.model.id), self.model.dim)

    def get(self, identity_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The templates of these identities (those with live vectors), reading the ones not
        read yet."""
        from storage.embeddings import identity_vector_refs

        wanted = sorted({int(g) for g in identity_ids if g not in self.cached})
        if wanted:
            store = self._store()
            for lo in range(0, len(wanted), CHUNK):
                with self.lookups() as s:
                    refs = identity_vector_refs(
                        session=s,
                        model_version_id=self.model.id,
                        identity_ids=wanted[lo : lo + CHUNK],
                    )
                for g, r in refs.items():
                    self.cached[g] = mean_template(store.read(r), normalize=self.normalize)
        return {g: self.cached[g] for g in identity_ids if g in self.cached}

    def load_all(self, previous: MeanTemplates | None = None) -> int:
        """Every identity's template (see the module's docstring); the number held."""
        if previous is not None and self._follows(previous):
            changed = self._changed_since(previous)
            everyone = self.owners.identity_ids.tolist()
            kept = {g: m for g, m in previous.cached.items() if g not in changed}
            if len(everyone) - len(kept) <= max(BULK_SHARE * len(everyone), CHUNK):
                self.cached = kept
                self.get([g for g in everyone if g not in kept])
                return len(self.cached)
        vectors, slots = self.live_vectors()
        owners, means = mean_templates(vectors, slots, normalize=self.normalize)
        self.cached = dict(zip(self.owners.identity_ids[owners].tolist(), means, strict=True))
        return len(self.cached)

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live vector of the model whose identity this version answers, sorted by
        identity: ([V, d] vectors, [V] each one's identity slot in ``owners``)."""
        from storage.embeddings import live_embeddings

        with self.lookups() as s:
            rows = live_embeddings(session=s, model_version_id=self.model.id)
        slots = self.owners.slot_of(np.asarray([f for f, _ in rows], dtype=np.int64))
        mine = np.flatnonzero(slots >= 0)
        mine = mine[np.argsort(slots[mine], kind="stable")]
        return self._store().read([rows[i][1] for i in mine.tolist()]), slots[mine]

    def _follows(self, previous: MeanTemplates) -> bool:
        return (
            previous.model.id == self.model.id
            and previous.normalize == self.normalize
            and previous.built_at is not None
            and bool(previous.cached)
        )

    def _changed_since(self, previous: MeanTemplates) -> set[int]:
        """Identities with an image that came or went, or whose vector was written after the
        previous version was built (a face chosen again), by either version's owners."""
        from storage.embeddings import renewed_since

        assert previous.built_at is not None
        with self.lookups() as s:
            renewed = renewed_since(
                session=s, model_version_id=self.model.id, since=previous.built_at
            )
        moved = np.setxor1d(previous.owners.face_ids, self.owners.face_ids)
        ids = np.union1d(moved, np.asarray(renewed, dtype=np.int64))
        changed: set[int] = set()
        for owners in (previous.owners, self.owners):
            slots = owners.slot_of(ids)
            changed.update(owners.identity_ids[slots[slots >= 0]].tolist())
        return changed

    def rescore(
        self, vectors: np.ndarray, grouped: list[list[tuple[int, float, int]]]
    ) -> list[list[tuple[int, float, int]]]:
        """Each probe's candidate identities (id, distance, face image) re-scored by the
        distance to their mean template, nearest first: one distance matrix for the batch."""
        from siamese.distances import pairwise_distances

        means = self.get(sorted({g for row in grouped for g, _, _ in row}))
        if not means:
            return [[] for _ in grouped]
        column = {g: j for j, g in enumerate(means)}
        dist = pairwise_distances(vectors, np.stack(list(means.values())), self.model.distance)
        return [
            sorted(
                ((g, float(dist[i, column[g]]), f) for g, _, f in row if g in column),
                key=lambda t: t[1],
            )
            for i, row in enumerate(grouped)
        ]
