"""Identity-aware batches and pair selection (with optional in-batch hard-negative mining).

A training step draws a P x K batch (P identities, K images each) with
:class:`IdentityBatchSampler`, embeds its images once, then scores pairs *inside*
the batch chosen by :func:`select_pairs`: genuine pairs among each identity's K
images and impostor pairs across identities, in a configurable ratio (Chopra et al.
2005 use 50/50). Embedding each image once and indexing pairs into the batch is
equivalent to running both Siamese branches (the weights are shared) and gives
many more pairs per forward pass.

Hard-negative mining ranks the batch's impostor pairs by their current distance
(under ``torch.no_grad()``) and draws the needed impostors at random from the
closest ``hard_pool_factor`` x as many: strict "hardest only" mining latches onto
mislabelled or near-duplicate faces, the random pool keeps it stable.

Identity-level mining ("doppelganger mining", Smirnov et al., ICCV workshops
2017) goes one step earlier: with few identities per batch, a person's most
confusable look-alike is rarely in the same batch, so in-batch mining never sees
the pairs that cause most verification errors. :func:`nearest_identities` ranks
identities by the distance between their embedding centroids, and a sampler
given those neighbours (:meth:`IdentityBatchSampler.set_neighbours`) builds each
batch from random identities together with one of their closest look-alikes.

All randomness comes from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Scores impostor candidate pairs: (left, right) batch positions ``[M]`` -> ``[M]``
#: distances (lower = more alike = harder impostor).
PairScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


class IdentityBatchSampler:
    """Draws P x K batches: P distinct identities, K distinct images of each.

    Identities with fewer than two images cannot form genuine pairs and are left
    out; an identity with fewer than K images contributes all it has. Once
    :meth:`set_neighbours` has been called, identities come in look-alike pairs.

    Args:
        labels: ``[N]`` integer identity label of every image.
        identities_per_batch: P (clipped to the number of usable identities).
        images_per_identity: K (>= 2).
        rng: the source of all randomness.
    """

    def __init__(
        self,
        labels: np.ndarray,
        identities_per_batch: int,
        images_per_identity: int,
        rng: np.random.Generator,
    ) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D; got shape {labels.shape}")
        if identities_per_batch < 2:
            raise ValueError(f"identities_per_batch must be >= 2; got {identities_per_batch}")
        if images_per_identity < 2:
            raise ValueError(f"images_per_identity must be >= 2; got {images_per_identity}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError("rng must be a numpy.random.Generator")
        ids, counts = np.unique(labels, return_counts=True)
        usable = ids[counts >= 2]
        if usable.size < 2:
            raise ValueError(
                f"need at least 2 identities with 2+ images to form genuine and impostor pairs; "
                f"got {usable.size}"
            )
        if usable.size < ids.size:
            logger.info(
                "%d identities have a single image and are not sampled", ids.size - usable.size
            )
        self.identities = usable
        self._members = {int(i): np.flatnonzero(labels == i) for i in usable}
        self.p = min(identities_per_batch, usable.size)
        if self.p < identities_per_batch:
            logger.info(
                "identities_per_batch %d clipped to the %d identities available",
                identities_per_batch,
                self.p,
            )
        self.k = images_per_identity
        self.labels = labels
        self.rng = rng
        self._neighbours: dict[int, np.ndarray] | None = None
        self.neighbour_choices = 2

    def set_neighbours(self, neighbours: dict[int, np.ndarray] | None) -> None:
        """Look-alikes per identity, closest first (see :func:`nearest_identities`); None resets."""
        if neighbours is not None:
            missing = [int(i) for i in self.identities if int(i) not in neighbours]
            if missing:
                raise ValueError(f"no neighbours given for identities {missing[:5]}")
        self._neighbours = neighbours

    def _choose_identities(self) -> np.ndarray:
        if self._neighbours is None:
            return self.rng.choice(self.identities, size=self.p, replace=False)
        usable = {int(i) for i in self.identities}
        chosen: list[int] = []
        taken: set[int] = set()
        for ident in self.rng.permutation(self.identities):
            if len(chosen) >= self.p:
                break
            ident = int(ident)
            if ident in taken:
                continue
            chosen.append(ident)
            taken.add(ident)
            # One of its closest not-yet-chosen look-alikes (a random one of the first
            # few, so the same pairs are not fixed for a whole epoch).
            candidates = [
                int(n) for n in self._neighbours[ident] if int(n) in usable and int(n) not in taken
            ][: self.neighbour_choices]
            if candidates and len(chosen) < self.p:
                mate = int(self.rng.choice(candidates))
                chosen.append(mate)
                taken.add(mate)
        return np.asarray(chosen)

    @property
    def batch_size(self) -> int:
        """Images in a batch when every identity has K images."""
        return self.p * self.k

    def sample(self) -> np.ndarray:
        """Indices ``[<= P*K]`` into ``labels``, grouped by identity."""
        chosen = self._choose_identities()
        parts = []
        for ident in chosen:
            members = self._members[int(ident)]
            take = min(self.k, members.size)
            parts.append(self.rng.choice(members, size=take, replace=False))
        return np.concatenate(parts).astype(np.int64)


@dataclass(frozen=True)
class PairIndices:
    """Pairs inside a batch: positions ``left[i]``, ``right[i]`` and whether they match."""

    left: np.ndarray  # int64 [M]
    right: np.ndarray  # int64 [M]
    same: np.ndarray  # bool [M]

    def __len__(self) -> int:
        return int(self.left.size)

    @property
    def genuine_fraction(self) -> float:
        return float(self.same.mean()) if self.same.size else 0.0


def _take(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``pool``: without replacement when it has enough, else with."""
    if n <= 0:
        return pool[:0]
    idx = rng.choice(pool.shape[0], size=n, replace=n > pool.shape[0])
    return pool[np.sort(idx)]


def select_pairs(
    batch_labels: np.ndarray,
    *,
    genuine_fraction: float,
    rng: np.random.Generator,
    pairs_per_batch: int | None = None,
    hard_scorer: PairScorer | None = None,
    hard_pool_factor: float = 2.0,
    max_hard_candidates: int | None = None,
) -> PairIndices:
    """Choose genuine and impostor pairs among the images of one batch.

    Args:
        batch_labels: ``[B]`` identity labels of the batch's images.
        genuine_fraction: share of genuine pairs, in (0, 1).
        rng: the source of all randomness.
        pairs_per_batch: total pairs; ``None`` = every genuine pair of the batch plus
            impostors for the requested ratio.
        hard_scorer: when given, impostor pairs are mined: candidates are scored with
            it and the impostors are drawn from the ``hard_pool_factor`` x as many
            lowest-distance candidates. ``None`` draws impostors uniformly.
        hard_pool_factor: >= 1; 1 takes strictly the hardest.
        max_hard_candidates: score at most this many (uniformly drawn) impostor
            candidates, for scorers that are expensive (the two-channel network).

    Returns:
        :class:`PairIndices` with genuine pairs first, then impostors.
    """
    labels = np.asarray(batch_labels)
    if not 0.0 < genuine_fraction < 1.0:
        raise ValueError(f"genuine_fraction must be in (0, 1); got {genuine_fraction}")
    if hard_pool_factor < 1.0:
        raise ValueError(f"hard_pool_factor must be >= 1; got {hard_pool_factor}")
    iu, ju = np.triu_indices(labels.size, k=1)
    same = labels[iu] == labels[ju]
    genuine_all = np.stack([iu[same], ju[same]], axis=1)
    impostor_all = np.stack([iu[~same], ju[~same]], axis=1)
    if genuine_all.shape[0] == 0 or impostor_all.shape[0] == 0:
        raise ValueError(
            "a batch needs two images of one identity and two identities to form pairs; "
            f"got labels {labels.tolist()}"
        )

    if pairs_per_batch is None:
        n_gen = genuine_all.shape[0]
        n_imp = max(1, round(n_gen * (1.0 - genuine_fraction) / genuine_fraction))
    else:
        n_gen = min(max(1, round(pairs_per_batch * genuine_fraction)), pairs_per_batch - 1)
        n_imp = pairs_per_batch - n_gen
    genuine = _take(genuine_all, n_gen, rng)

    if hard_scorer is None:
        impostor = _take(impostor_all, n_imp, rng)
    else:
        candidates = impostor_all
        if max_hard_candidates is not None and candidates.shape[0] > max_hard_candidates:
            candidates = _take(candidates, max_hard_candidates, rng)
        with torch.no_grad():
            scores = np.asarray(hard_scorer(candidates[:, 0], candidates[:, 1]), dtype=np.float64)
        if scores.shape != (candidates.shape[0],):
            raise ValueError(
                f"hard_scorer returned shape {scores.shape} for {candidates.shape[0]} candidates"
            )
        pool_size = min(candidates.shape[0], max(n_imp, math.ceil(hard_pool_factor * n_imp)))
        # Stable sort: ties resolved by position, so mining stays deterministic.
        hardest = candidates[np.argsort(scores, kind="stable")[:pool_size]]
        impostor = _take(hardest, n_imp, rng)

    pairs = np.concatenate([genuine, impostor], axis=0)
    flags = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    return PairIndices(
        left=pairs[:, 0].astype(np.int64), right=pairs[:, 1].astype(np.int64), same=flags
    )


def nearest_identities(
    embeddings: np.ndarray, labels: np.ndarray, distance: str = "l2"
) -> dict[int, np.ndarray]:
    """Each identity's other identities, closest embedding centroid first.

    Args:
        embeddings: ``[N, D]`` embeddings (e.g. of the training images, eval mode).
        labels: ``[N]`` identity labels.
        distance: ``"l2"``, ``"l1"`` or ``"cosine"`` between centroids.

    Returns:
        ``{identity: int64 array of the other identities, nearest first}``.
    """
    from siamese.distances import pairwise_distances

    labels = np.asarray(labels)
    ids = np.unique(labels)
    centroids = np.stack([embeddings[labels == i].mean(axis=0) for i in ids])
    dist = pairwise_distances(centroids, centroids, distance)
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :-1]  # drop self (inf, last)
    return {int(i): ids[order[row]].astype(np.int64) for row, i in enumerate(ids)}


def distance_matrix_scorer(dist: torch.Tensor) -> PairScorer:
    """A :data:`PairScorer` reading a precomputed ``[B, B]`` batch distance matrix."""
    values = dist.detach().float().cpu().numpy()

    def score(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return values[left, right]

    return score
