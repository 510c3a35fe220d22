"""Owners in memory: the vectorised grouping answers what the per-row reference answers, and
an identity removed in SQL stops being answered once refreshed."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.services.owners import Owners
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import group_by_identity


def owners_of(face_to_identity: dict[int, int], names: dict[int, str]) -> Owners:
    faces = np.asarray(list(face_to_identity), np.int64)
    idents = np.asarray(list(face_to_identity.values()), np.int64)
    return Owners(faces, idents, names, (len(names), ""))


@pytest.mark.parametrize("seed", range(20))
def test_group_matches_the_per_row_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_faces, n_ident = int(rng.integers(1, 60)), int(rng.integers(1, 12))
    face_ids = rng.choice(10_000, size=n_faces, replace=False)
    mapping = {int(f): int(rng.integers(1, n_ident + 1)) for f in face_ids}
    names = {i: f"p{i}" for i in range(1, n_ident + 1)}
    owners = owners_of(mapping, names)
    rows, k = int(rng.integers(1, 8)), int(rng.integers(1, 30))
    # Ascending distances per row (as faiss answers), ties included; unknown ids and padding.
    dist = np.sort(rng.integers(0, 6, size=(rows, k)).astype(np.float32) / 4, axis=1)
    pool = np.concatenate([face_ids, [-1, 999_999]])
    ids = rng.choice(pool, size=(rows, k)).astype(np.int64)
    dist[ids == -1] = np.inf
    top_k = rng.integers(1, 6, size=rows)
    got = owners.group(dist, ids, top_k)
    for r in range(rows):
        want = group_by_identity(dist[r], ids[r], mapping, int(top_k[r]))
        mine = [(int(owners.identity_ids[h.slot]), h.distance, h.face_image_id) for h in got[r]]
        assert mine == want, (seed, r)


def test_slots_skip_padding_unknown_and_faces_without_a_known_identity() -> None:
    owners = owners_of({5: 1, 7: 2, 9: 3}, {1: "a", 2: "b"})  # identity 3 unknown at load
    assert owners.slot_of(np.array([[5, 7, 9, -1, 8]])).tolist() == [[0, 1, -1, -1, -1]]
    empty = owners_of({}, {})
    assert empty.slot_of(np.array([[-1, 3]])).tolist() == [[-1, -1]]
    assert empty.group(np.zeros((1, 2), np.float32), np.array([[-1, 3]]), 5) == [[]]


def test_refresh_marks_identities_removed_in_sql(rt: Runtime) -> None:
    from sqlalchemy import insert

    from pipelines.services.enrolment import remove_identity
    from storage.models import FaceImage, Identity

    with rt.sessions.begin() as s:
        s.execute(insert(Identity), [{"id": i, "name": f"p{i}", "attributes": {}} for i in (1, 2)])
        s.execute(
            insert(FaceImage),
            [
                {
                    "id": f,
                    "identity_id": 1 + f % 2,
                    "source_uri": f"/x/{f}",
                    "sha256": f"{f:064x}",
                    "status": "accepted",
                }
                for f in range(1, 7)
            ],
        )
    with rt.sessions() as s:
        owners = Owners.load(s)
    dist, ids = np.array([[0.1, 0.2, 0.3]], np.float32), np.array([[2, 1, 4]])
    assert [owners.names[h.slot] for h in owners.group(dist, ids, 5)[0]] == ["p1", "p2"]
    with rt.sessions() as s:
        assert owners.refresh(s) == 0  # nothing changed: one aggregate, no names read
    remove_identity(rt, "p1")
    with rt.sessions() as s:
        assert owners.refresh(s) == 1 and owners.removed == 1
        assert owners.refresh(s) == 0
    assert [owners.names[h.slot] for h in owners.group(dist, ids, 5)[0]] == ["p2"]
    # An id reused by a newer identity (SQLite reuses the largest rowid) is not its old owner.
    with rt.sessions.begin() as s:
        s.execute(insert(Identity), [{"id": 1, "name": "someone else", "attributes": {}}])
    with rt.sessions() as s:
        assert owners.refresh(s) == 0 and owners.removed == 1
