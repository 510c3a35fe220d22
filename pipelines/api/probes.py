"""Answering one probe over HTTP: an uploaded photo, or an embedding computed elsewhere.

Both go through the loaded :class:`~pipelines.services.identification.Identifier`, so the
answers are those of ``siamid identify --json``. A photo is decoded in memory first (so a bad
upload is refused with its reason before anything else), then written to a private temporary
file and given to ``Identifier.identify``, the very path the command line takes.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from index.errors import DimensionMismatchError
from pipelines.services.identification import Decision, Identifier
from siamese.images import REJECT_REASONS, DecodeLimits, ImageRejected, decode_bytes

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


def identify_photo(
    ident: Identifier,
    data: bytes,
    *,
    limits: DecodeLimits,
    label: str = "upload",
    scratch: Path | None = None,
) -> list[Decision]:
    """Decisions for one uploaded photo; :class:`ImageRejected` when it is not a usable image.

    ``label`` (the client's file name) is only echoed back as ``probe``: it never names a
    file. The bytes go to a temporary file with a name of our own in ``scratch``.
    """
    decode_bytes(data, limits=limits, name=label)  # refuses bombs, truncation, non-images
    fd, tmp = tempfile.mkstemp(prefix="probe-", dir=scratch)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        decisions = ident.identify([Path(tmp)])
    finally:
        Path(tmp).unlink(missing_ok=True)
    for d in decisions:
        d.probe = label
    failed = [d for d in decisions if d.decision == "error"]
    if failed and len(failed) == len(decisions):
        reason, _, detail = (failed[0].error or "corrupt: cannot be embedded").partition(": ")
        raise ImageRejected(reason if reason in REJECT_REASONS else "corrupt", detail or reason)
    return decisions


def search_embedding(ident: Identifier, values: Sequence[float]) -> Decision:
    """The decision for an embedding made by the index's model (its dimension is checked)."""
    vector = np.asarray(values, dtype=np.float32)
    if vector.ndim != 1 or vector.shape[0] != ident.model.dim:
        raise DimensionMismatchError(
            f"the embedding has {vector.size} numbers but model {ident.model.name} (index "
            f"version {ident.index_version_id}) makes {ident.model.dim}-dimensional embeddings",
            expected=ident.model.dim,
            got=int(vector.size),
        )
    candidates = ident.search(vector[None])[0]
    return ident.decide("embedding", candidates)
