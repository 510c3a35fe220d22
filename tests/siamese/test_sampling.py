"""P x K batches and in-batch pair selection: composition, balance, mining, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamese.sampling import (
    IdentityBatchSampler,
    distance_matrix_scorer,
    nearest_identities,
    select_pairs,
)

LABELS = np.repeat(np.arange(8), 6)  # 8 identities x 6 images


def test_batches_have_p_identities_with_k_distinct_images() -> None:
    sampler = IdentityBatchSampler(LABELS, 4, 3, np.random.default_rng(0))
    for _ in range(20):
        idx = sampler.sample()
        assert idx.size == 12
        assert np.unique(idx).size == 12  # no image twice
        ids, counts = np.unique(LABELS[idx], return_counts=True)
        assert ids.size == 4
        assert np.all(counts == 3)


def test_sampler_is_deterministic_for_a_seed() -> None:
    a = IdentityBatchSampler(LABELS, 4, 3, np.random.default_rng(7))
    b = IdentityBatchSampler(LABELS, 4, 3, np.random.default_rng(7))
    c = IdentityBatchSampler(LABELS, 4, 3, np.random.default_rng(8))
    seq_a = [a.sample() for _ in range(5)]
    seq_b = [b.sample() for _ in range(5)]
    seq_c = [c.sample() for _ in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(seq_a, seq_b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(seq_a, seq_c, strict=True))


def test_sampler_skips_singletons_and_clips_p() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])  # identity 2 has one image
    sampler = IdentityBatchSampler(labels, 5, 4, np.random.default_rng(0))
    assert sampler.p == 2
    idx = sampler.sample()
    assert sorted(labels[idx].tolist()) == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="at least 2 identities"):
        IdentityBatchSampler(np.array([0, 0, 1]), 2, 2, np.random.default_rng(0))


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8])
def test_pairs_have_the_requested_genuine_fraction(fraction: float) -> None:
    batch = np.repeat(np.arange(4), 4)
    pairs = select_pairs(
        batch, genuine_fraction=fraction, rng=np.random.default_rng(0), pairs_per_batch=40
    )
    assert len(pairs) == 40
    assert pairs.genuine_fraction == pytest.approx(fraction, abs=0.5 / 40)
    np.testing.assert_array_equal(pairs.same, batch[pairs.left] == batch[pairs.right])
    assert np.all(pairs.left != pairs.right)


def test_default_pairs_use_every_genuine_pair() -> None:
    batch = np.repeat(np.arange(5), 4)  # 5 x C(4, 2) = 30 genuine pairs
    pairs = select_pairs(batch, genuine_fraction=0.5, rng=np.random.default_rng(0))
    assert pairs.same.sum() == 30
    assert (~pairs.same).sum() == 30
    genuine = {
        (int(a), int(b)) for a, b, s in zip(pairs.left, pairs.right, pairs.same, strict=True) if s
    }
    assert len(genuine) == 30


def test_pair_selection_is_deterministic() -> None:
    batch = np.repeat(np.arange(4), 3)
    p1 = select_pairs(batch, genuine_fraction=0.5, rng=np.random.default_rng(3), pairs_per_batch=10)
    p2 = select_pairs(batch, genuine_fraction=0.5, rng=np.random.default_rng(3), pairs_per_batch=10)
    for f in ("left", "right", "same"):
        np.testing.assert_array_equal(getattr(p1, f), getattr(p2, f))


def test_hard_negatives_are_the_closest_impostors_and_mined_without_grad() -> None:
    batch = np.repeat(np.arange(3), 2)  # images 0,1 | 2,3 | 4,5
    emb = torch.tensor([[0.0], [0.1], [0.15], [3.0], [6.0], [9.0]], requires_grad=True)
    dist = (emb - emb.T).abs()
    seen_grad = []
    base = distance_matrix_scorer(dist)

    def scorer(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        seen_grad.append(torch.is_grad_enabled())
        return base(left, right)

    pairs = select_pairs(
        batch,
        genuine_fraction=0.75,  # 3 genuine pairs -> 1 impostor
        rng=np.random.default_rng(0),
        hard_scorer=scorer,
        hard_pool_factor=1.0,
    )
    assert seen_grad == [False]
    impostors = [
        (int(a), int(b))
        for a, b, s in zip(pairs.left, pairs.right, pairs.same, strict=True)
        if not s
    ]
    assert impostors == [(1, 2)]  # distance 0.05, the closest cross-identity pair


def test_soft_mining_draws_from_the_hard_pool() -> None:
    batch = np.repeat(np.arange(6), 2)
    rng = np.random.default_rng(0)
    values = rng.random((12, 12))
    pairs = select_pairs(
        batch,
        genuine_fraction=0.5,
        rng=np.random.default_rng(1),
        pairs_per_batch=10,
        hard_scorer=lambda left, right: values[left, right],
        hard_pool_factor=2.0,
    )
    iu, ju = np.triu_indices(12, 1)
    imp = batch[iu] != batch[ju]
    pool = np.sort(values[iu[imp], ju[imp]])[:10]
    chosen = values[pairs.left[~pairs.same], pairs.right[~pairs.same]]
    assert chosen.size == 5
    assert np.all(chosen <= pool.max())


def test_select_pairs_errors() -> None:
    with pytest.raises(ValueError, match="genuine_fraction"):
        select_pairs(np.array([0, 0, 1]), genuine_fraction=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="two images"):
        select_pairs(np.array([0, 1, 2]), genuine_fraction=0.5, rng=np.random.default_rng(0))


def test_nearest_identities_ranks_centroids() -> None:
    # Identity centroids on a line at 0, 1, 5, 6: 0 <-> 1 and 2 <-> 3 are look-alikes.
    centres = np.array([0.0, 1.0, 5.0, 6.0])
    labels = np.repeat(np.arange(4), 3)
    emb = (centres[labels] + np.tile([-0.1, 0.0, 0.1], 4))[:, None]
    nn = nearest_identities(emb, labels)
    assert nn[0].tolist() == [1, 2, 3]
    assert nn[2].tolist() == [3, 1, 0]
    assert nn[3][0] == 2


def test_doppelganger_batches_contain_look_alike_pairs() -> None:
    labels = np.repeat(np.arange(8), 4)
    sampler = IdentityBatchSampler(labels, 4, 2, np.random.default_rng(0))
    mates = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6}
    sampler.set_neighbours(
        {
            i: np.array([mates[i]] + [j for j in range(8) if j not in (i, mates[i])])
            for i in range(8)
        }
    )
    sampler.neighbour_choices = 1
    for _ in range(20):
        ids = set(labels[sampler.sample()].tolist())
        assert len(ids) == 4
        assert all(mates[i] in ids for i in ids)
    sampler.set_neighbours(None)  # back to uniform identities
    assert len(set(labels[sampler.sample()].tolist())) == 4
    with pytest.raises(ValueError, match="no neighbours"):
        sampler.set_neighbours({0: np.array([1])})
