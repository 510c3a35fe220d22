"""Answering one probe over HTTP: an uploaded photo, or an embedding computed elsewhere.

Both go through the loaded :class:`~pipelines.services.identification.Identifier`, so the
answers are those of ``siamid identify --json``. A photo is decoded once, in memory (a bad
upload is refused with its reason before anything else); its pixels go to detection and the
chips directly, as ``Identifier.identify`` does for a file. The encoder and the index are then
called for many requests at once (:mod:`pipelines.api.queries`).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence

import numpy as np

from index.errors import DimensionMismatchError
from pipelines.services.encoding import encode_tensors
from pipelines.services.identification import Decision, Identifier, Prepared
from siamese.images import DecodeLimits, decode_bytes

logger = logging.getLogger(__name__)

_threads = threading.local()


def pin_threads(search_threads: int, torch_threads: int) -> None:
    """Set faiss' and torch's OpenMP thread counts for the calling (worker) thread.

    OpenMP keeps the count per thread, and faiss and torch each bring their own OpenMP
    runtime: a count set in the main thread at start-up reaches neither runtime in the
    server's worker threads, which would then use every core for one request.
    ``torch_threads`` 0 leaves torch's default.
    """
    wanted = (search_threads, torch_threads)
    if getattr(_threads, "pinned", None) == wanted:
        return
    import faiss
    import torch

    faiss.omp_set_num_threads(search_threads)
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    _threads.pinned = wanted


def with_top_k(ident: Identifier, top_k: int) -> Identifier:
    """The same loaded index, model and threshold, answering ``top_k`` candidates.

    A shallow copy: nothing is loaded again, and the identifier the others use is untouched.
    The search depth grows with ``top_k`` as in ``Identifier`` (10 neighbours per identity).
    """
    if top_k == ident.top_k:
        return ident
    view = copy.copy(ident)
    view.top_k = top_k
    view.search_k = max(ident.search_k, 10 * top_k)
    return view


def prepare_photo(
    ident: Identifier, data: bytes, *, limits: DecodeLimits, label: str = "upload"
) -> Prepared:
    """An uploaded photo, decoded once and checked (:class:`ImageRejected` when it is not a
    usable image), its faces found and their chips made, ready for the encoder.

    ``label`` (the client's file name) is only echoed back as ``probe``: it never names a
    file, and nothing is written to disk.
    """
    image = decode_bytes(data, limits=limits, name=label).image
    return ident.prepare(image, label)


def embedding_vector(ident: Identifier, values: Sequence[float]) -> np.ndarray:
    """An embedding made by the index's model as a float32 vector (its dimension checked)."""
    vector = np.asarray(values, dtype=np.float32)
    if vector.ndim != 1 or vector.shape[0] != ident.model.dim:
        raise DimensionMismatchError(
            f"the embedding has {vector.size} numbers but model {ident.model.name} (index "
            f"version {ident.index_version_id}) makes {ident.model.dim}-dimensional embeddings",
            expected=ident.model.dim,
            got=int(vector.size),
        )
    return vector


def identify_photo(
    ident: Identifier, data: bytes, *, limits: DecodeLimits, label: str = "upload"
) -> list[Decision]:
    """Decisions for one uploaded photo, on the calling thread and alone (no batching): for
    callers outside the query path's batches (the web console). Decoded once, as there."""
    prepared = prepare_photo(ident, data, limits=limits, label=label)
    found = ident.search(encode_tensors(ident.forward, prepared.chips)) if prepared.chips else []
    return ident.answer(prepared, found)
