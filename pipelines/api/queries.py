"""The query path of the API: requests in flight share the encoder's and the index's calls.

``/v1/search`` and ``/v1/identify`` both end in :meth:`Queries.search`; the chips of every
``/v1/identify`` in flight go through the network together (:meth:`Queries.embed`). Each is a
:class:`~pipelines.api.batching.MicroBatcher` whose batch runs on a compute thread
(``ApiState.compute``): the event loop only gathers, hands over and answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from pipelines.api import probes
from pipelines.api.batching import MicroBatcher
from pipelines.api.settings import ApiSettings
from pipelines.services.encoding import encode_tensors
from pipelines.services.identification import Candidate, Decision, Identifier
from siamese.images import DecodeLimits

Compute = Callable[..., Awaitable[Any]]


class Queries:
    def __init__(
        self,
        compute: Compute,
        settings: ApiSettings,
        limits: DecodeLimits,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> None:
        self.compute, self.limits, self.on_batch = compute, limits, on_batch
        window, size = settings.batch_window_ms / 1e3, settings.batch_max
        self.searches: MicroBatcher[tuple[int, int], tuple[Identifier, np.ndarray], list[Candidate]]
        self.searches = MicroBatcher(self._search_batch, window=window, max_size=size)
        self.chips: MicroBatcher[int, tuple[Identifier, Any], np.ndarray]
        self.chips = MicroBatcher(self._embed_batch, window=window, max_size=size)

    async def search(self, ident: Identifier, vector: np.ndarray) -> list[Candidate]:
        """The candidates of one probe vector, searched together with the others in flight
        on the same index version and search depth."""
        return await self.searches.submit((id(ident.index), ident.search_k), (ident, vector))

    async def embed(self, ident: Identifier, chip: Any) -> np.ndarray:
        """The vector of one preprocessed chip, in one forward pass with the others in flight."""
        return await self.chips.submit(id(ident.encoder), (ident, chip))

    async def search_embedding(self, ident: Identifier, values: list[float]) -> Decision:
        candidates = await self.search(ident, probes.embedding_vector(ident, values))
        return ident.decide("embedding", candidates)

    async def identify_photo(self, ident: Identifier, data: bytes, label: str) -> list[Decision]:
        """Decode once, find the faces, then embed and search each face with the requests in
        flight; :class:`~siamese.images.ImageRejected` for an upload that is no usable image."""
        prepared = await self.compute(
            probes.prepare_photo, ident, data, limits=self.limits, label=label
        )
        vectors = await asyncio.gather(*(self.embed(ident, c) for c in prepared.chips))
        found = await asyncio.gather(*(self.search(ident, v) for v in vectors))
        return ident.answer(prepared, found)

    async def _search_batch(
        self, key: tuple[int, int], items: list[tuple[Identifier, np.ndarray]]
    ) -> list[list[Candidate]]:
        ident = items[0][0]  # same index, model, owners and depth; top_k per request
        vectors = np.stack([v for _, v in items])
        top_k = np.asarray([i.top_k for i, _ in items])
        if self.on_batch is not None:
            self.on_batch("search", len(items))
        return list(await self.compute(ident.search, vectors, top_k))

    async def _embed_batch(self, key: int, items: list[tuple[Identifier, Any]]) -> list[np.ndarray]:
        forward = items[0][0].forward
        if self.on_batch is not None:
            self.on_batch("embed", len(items))
        return list(await self.compute(encode_tensors, forward, [c for _, c in items]))
