"""Whose face is it: the labelled person's face in a photo with several usable faces.

A labelled photo (a gallery import, a training photo, an evaluation's enrolment) says who is in
it, not which face is theirs. The largest face is usually the person, but not always (a couple's
photo, a fan in front of the star, a poster behind them). With descriptors of every usable face,
the person's face is the one that agrees with the person's other photos:

- the reference is the robust mean of the descriptors of the person's single-face photos
  (:func:`robust_mean`); with none, the medoid face: the one whose summed distance to the
  nearest face of each other photo is smallest;
- in each photo with several faces, the face nearest the reference is the person's
  (``chosen_by="consistent"``); a photo with one usable face is ``"only"``; a person with a
  single photo, all of it ambiguous, falls back to the largest face (``"largest"``).

The rule runs per model version (its descriptors decide), so it is decided again when the
person gains photos or the model changes. ``--multiple-faces`` picks the policy
(:data:`MULTIPLE_FACES`): ``consistent`` (this rule), ``largest`` (the largest face, as before),
``refuse`` (a photo with several faces enrols nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: What to do with a labelled photo of several people (``--multiple-faces``), default first.
MULTIPLE_FACES: tuple[str, ...] = ("consistent", "largest", "refuse")
#: Why a face was taken as the person's.
CHOSEN_BY: tuple[str, ...] = ("only", "consistent", "largest")

#: Share of a person's single-face descriptors kept by the robust mean (nearest the plain mean).
ROBUST_KEEP = 0.75


@dataclass(frozen=True)
class FaceChoice:
    """The person's face in one photo: its index among the photo's faces (largest first), or
    None (no usable face, or several and ``refuse``), and why."""

    face: int | None
    chosen_by: str | None


def robust_mean(vectors: np.ndarray, distance: str) -> np.ndarray:
    """[n, d] -> [d]: the mean of the ``ROBUST_KEEP`` share nearest the plain mean (at least
    one), so a mislabelled photo or a stranger's single face does not drag the reference."""
    vectors = np.asarray(vectors, dtype=np.float32)
    mean = vectors.mean(axis=0)
    if len(vectors) < 3:
        return mean
    d = _distances(vectors, mean[None], distance)[:, 0]
    keep = max(1, int(np.ceil(ROBUST_KEEP * len(vectors))))
    return vectors[np.argsort(d, kind="stable")[:keep]].mean(axis=0)


def choose_faces(
    photos: Sequence[np.ndarray], *, distance: str, policy: str = "consistent"
) -> list[FaceChoice]:
    """One person's photos, each as the [n_i, d] descriptors of its usable faces (largest
    first; n_i may be 0) -> the person's face in each photo."""
    if policy not in MULTIPLE_FACES:
        raise ValueError(
            f"--multiple-faces must be one of {', '.join(MULTIPLE_FACES)}, got {policy!r}"
        )
    photos = [_as_faces(p) for p in photos]
    out: list[FaceChoice | None] = [
        FaceChoice(None, None) if len(p) == 0 else FaceChoice(0, "only") if len(p) == 1 else None
        for p in photos
    ]
    several = [i for i, c in enumerate(out) if c is None]
    if not several:
        return [c for c in out if c is not None]
    if policy == "refuse":
        fill = {i: FaceChoice(None, None) for i in several}
    elif policy == "largest":
        fill = {i: FaceChoice(0, "largest") for i in several}
    else:
        ref = reference(photos, distance)
        if ref is None:
            fill = {i: FaceChoice(0, "largest") for i in several}
        else:
            fill = {
                i: FaceChoice(
                    int(np.argmin(_distances(photos[i], ref[None], distance)[:, 0])),
                    "consistent",
                )
                for i in several
            }
    return [c if c is not None else fill[i] for i, c in enumerate(out)]


def reference(photos: Sequence[np.ndarray], distance: str) -> np.ndarray | None:
    """The descriptor a person's faces are compared with: the robust mean of their single-face
    photos, else the medoid face across photos with several; None with fewer than two photos
    with a face (nothing to agree with)."""
    single = [p[0] for p in photos if len(p) == 1]
    if single:
        return robust_mean(np.stack(single), distance)
    with_faces = [p for p in photos if len(p) > 0]
    if len(with_faces) < 2:
        return None
    faces = np.concatenate(with_faces)
    owner = np.concatenate([np.full(len(p), k) for k, p in enumerate(with_faces)])
    d = _distances(faces, faces, distance)
    cost = np.zeros(len(faces))
    for k in range(len(with_faces)):
        # each face's distance to the nearest face of photo k (its own photo excluded)
        nearest = d[:, owner == k].min(axis=1)
        cost += np.where(owner == k, 0.0, nearest)
    return faces[int(np.argmin(cost))]


def _as_faces(photo: np.ndarray) -> np.ndarray:
    arr = np.asarray(photo, dtype=np.float32)
    if arr.size == 0:
        return arr.reshape(0, arr.shape[-1] if arr.ndim == 2 else 0)
    if arr.ndim != 2:
        raise ValueError(f"a photo's faces must be [n, d] descriptors, got shape {arr.shape}")
    return arr


def _distances(a: np.ndarray, b: np.ndarray, distance: str) -> np.ndarray:
    from siamese.distances import pairwise_distances

    return np.asarray(pairwise_distances(a, b, distance), dtype=np.float64)
