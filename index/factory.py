"""Choosing a faiss ``index_factory`` string for a gallery of ``n`` vectors of dimension ``dim``.

The structure of every index is described by a factory string (as in faiss ``contrib``), so
it can be logged, stored next to the model version and reproduced exactly.

Sizing rules (see the faiss wiki "Guidelines to choose an index"):

* **Flat below ``FLAT_MAX_N`` = 50 000 vectors.** Open-set identification thresholds a
  *distance*, so exact distances keep the calibrated threshold valid; an exact scan of 50k x 512
  float32 (~100 MB) costs ~25 MFLOP per query, i.e. a few ms on one core and much less per query
  when batched through BLAS. IVF is also not worth it that small: k-means wants >= 39 training
  points per centroid, and with nlist = 4*sqrt(N) that only holds from N ~ 24k on.
* **IVF above it**, ``nlist ~ 4*sqrt(N)`` (lower end of faiss' 4..16*sqrt(N) advice: fewer,
  larger lists keep recall high at a small ``nprobe``), capped at ``N // 39`` so k-means is
  never starved when a caller asks for IVF on a small gallery.
* **By default the IVF lists are scanned with 4-bit PQ "fast-scan" codes and the best
  ``k * k_factor`` are re-ranked with the exact vectors** (``kind="ivf-fastscan"``:
  ``IDMap2,IVF{nlist},PQ{m}x4fs,RFlat``), so every distance returned is exact (the calibrated
  threshold stays valid) while the scan costs a fraction: at 1M 64-d vectors, nprobe 128, one
  thread, 206 us a probe against 531 us for ``IVF4000,Flat``, with the same nearest vector
  found (97.7% of 1,000 mated probes for both against an exact search; the same identity first
  for all of them; on dlib-resnet's real descriptors of celeba_wild the same nearest face as
  ``IVF...,Flat`` for 99.8% at k = 50; ``bench/bench_fastscan.py``, BENCHMARKS "Query service
  at the limit"). The raw vectors are kept as with
  ``Flat`` (plus ``m / 2`` bytes of codes each). faiss has no L1 for PQ codes, so ``l1``
  models keep ``IVF...,Flat`` (``kind="ivf"``).
* **IVF-PQ** (opt-in, ``kind="ivfpq"``) when memory matters: ``m`` sub-quantizers of 8 bits,
  ``m`` a divisor of ``dim`` with ~4 dims per sub-quantizer (capped at 64 bytes per code).
  ``kind="ivfpq-rflat"`` adds an exact re-ranking stage (``RFlat``) which restores recall at
  the cost of also keeping the raw vectors.
* **HNSW** (opt-in) for low latency without training; it cannot remove vectors in place
  (see ``VectorIndex.remove``) and stores ids through ``IDMap2``.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)

__all__ = [
    "FLAT_MAX_N",
    "KINDS",
    "choose_factory",
    "nlist_for",
    "pq_m_for",
    "default_nprobe",
]

FLAT_MAX_N = 50_000
#: faiss k-means warns below 39 training points per centroid.
MIN_POINTS_PER_CENTROID = 39
#: HNSW neighbours per node: faiss' usual default, good recall/memory trade-off for d<=512.
HNSW_M = 32
#: Upper bound on PQ code size: beyond 64 bytes IVF-Flat/SQ are usually the better trade-off.
MAX_PQ_M = 64

#: "np" skips faiss' polysemous training of IVF-PQ codes, which only serves the optional
#: polysemous Hamming pre-filter we never enable, and costs ~10x the PQ training time.
_NO_POLYSEMOUS = "np"

KINDS = ("auto", "flat", "ivf", "ivf-fastscan", "ivfpq", "ivfpq-rflat", "hnsw")


def nlist_for(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: ~4*sqrt(n), at most n // 39, at least 1."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    nlist = int(round(4 * math.sqrt(n)))
    nlist = min(nlist, n // MIN_POINTS_PER_CENTROID)
    return max(1, nlist)


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query by default: 2*sqrt(nlist), at least 8 (capped at nlist).

    faiss' own default (1) loses a lot of recall. Scanning ~2*sqrt(nlist) lists keeps the
    scanned fraction shrinking as the gallery grows (128 of 4000 lists, ~3%, at N=1M) and
    measured recall@1 >= 0.99 on clustered unit vectors even with spread-out clusters.
    """
    return max(1, min(nlist, max(8, 2 * int(math.ceil(math.sqrt(nlist))))))


def pq_m_for(dim: int) -> int:
    """Number of PQ sub-quantizers: the largest divisor of ``dim`` <= min(dim // 4, 64)."""
    if dim <= 0:
        raise ValueError(f"dim must be > 0, got {dim}")
    target = max(1, min(dim // 4, MAX_PQ_M))
    for m in range(target, 0, -1):
        if dim % m == 0:
            return m
    return 1  # unreachable: 1 divides everything


def choose_factory(n: int, dim: int, kind: str = "auto", metric: str = "l2") -> str:
    """Return a faiss ``index_factory`` string for ``n`` vectors of dimension ``dim``, searched
    with ``metric`` (``l1`` rules out quantized codes).

    ``kind`` is one of :data:`KINDS`; anything else is taken to be an explicit factory string
    and returned unchanged (``VectorIndex.create`` validates it and wraps it in ``IDMap2`` if the
    structure cannot store external ids by itself).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if dim <= 0:
        raise ValueError(f"dim must be > 0, got {dim}")
    key = kind.strip().lower()
    if key not in KINDS:
        if not kind.strip():
            raise ValueError(f"kind must be one of {KINDS} or a faiss factory string, got ''")
        return kind
    if key == "auto":
        key = "flat" if n < FLAT_MAX_N else "ivf" if metric == "l1" else "ivf-fastscan"

    if key == "flat":
        factory = "IDMap2,Flat"
    elif key == "hnsw":
        # HNSW has no add_with_ids: IDMap2 maps positions to database ids (and, unlike IDMap,
        # supports reconstruct-by-id, which the remove() fallback needs).
        factory = f"IDMap2,HNSW{HNSW_M},Flat"
    elif key == "ivf":
        factory = f"IVF{nlist_for(n)},Flat"
    elif key == "ivf-fastscan":  # IndexRefine has no add_with_ids -> IDMap2
        factory = f"IDMap2,IVF{nlist_for(n)},PQ{pq_m_for(dim)}x4fs,RFlat"
    elif key == "ivfpq":
        factory = f"IVF{nlist_for(n)},PQ{pq_m_for(dim)}{_NO_POLYSEMOUS}"
    else:  # ivfpq-rflat: IndexRefine has no add_with_ids either -> IDMap2
        factory = f"IDMap2,IVF{nlist_for(n)},PQ{pq_m_for(dim)}{_NO_POLYSEMOUS},RFlat"
    logger.debug("choose_factory(n=%d, dim=%d, kind=%r) -> %r", n, dim, kind, factory)
    return factory
