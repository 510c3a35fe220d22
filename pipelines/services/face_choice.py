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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from faces.face import Face
from pipelines.services.refusals import Refusal
from pipelines.services.scoring import MULTIPLE_FACES
from storage.models import CHOSEN_BY

if TYPE_CHECKING:
    from pipelines.services.models import ModelRef
    from pipelines.services.runtime import Runtime

__all__ = ["CHOSEN_BY", "MULTIPLE_FACES", "FaceChoice", "choose_faces", "reference"]

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


# ------------------------------------------------------------------ the gallery


def agreed_gallery_faces(rt: Runtime, image_ids: Sequence[int]) -> dict[int, Face]:
    """face_image id -> the face the served index's model embeds for it, for photos with
    several faces where that model chose the person's by agreement
    (:mod:`pipelines.services.face_choice`), under the current detector; others are absent."""
    from pipelines.services.detection import current_detections, to_face
    from storage.embeddings import agreed_face_ranks
    from storage.indexes import published_index

    with rt.sessions() as s:
        served = published_index(session=s)
        ranks = (
            agreed_face_ranks(session=s, model_version_id=served.model_version_id)
            if served is not None
            else {}
        )
    wanted = [i for i in image_ids if i in ranks]
    out = {}
    for fid, d in current_detections(rt, wanted).items():
        face = next((f for f in d.faces if f.rank == ranks[fid]), None)
        if face is not None:
            out[fid] = to_face(face)
    return out


def labelled_faces(rt: Runtime, image_ids: Sequence[int]) -> dict[int, Face]:
    """face_image id -> the face a labelled gallery photo trains on, under the current detector:
    the served model's choice by agreement (:func:`agreed_gallery_faces`), else the face
    chosen at detection (the largest); photos without one are absent."""
    from pipelines.services.detection import chosen_gallery_faces

    chosen = chosen_gallery_faces(rt, image_ids)
    chosen.update(agreed_gallery_faces(rt, list(chosen)))
    return chosen


@dataclass
class GalleryJobs:
    """What to encode for a chunk of gallery images in detect mode: every usable face of each
    image (``faces[k]`` from ``image[k]``, at ``rank[k]`` among its detected faces), and the
    images with nothing to encode, with why."""

    image: list[int] = field(default_factory=list)
    rank: list[int] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    refused: dict[int, Refusal] = field(default_factory=dict)
    largest: set[int] = field(default_factory=set)  # several usable faces, the largest taken


def gallery_jobs(rt: Runtime, image_ids: Sequence[int], policy: str) -> GalleryJobs:
    """The faces to encode for ``image_ids`` under the current detector: one per image with a
    single usable face; every usable one of an image with several (``consistent``), its largest
    (``largest``), or none (``refuse``, or refused when it was detected)."""
    from faces.face import is_too_small
    from pipelines.services.detection import current_detections, to_face

    found = current_detections(rt, image_ids)
    jobs = GalleryJobs()
    for fid in image_ids:
        d = found.get(fid)
        usable = [f for f in (d.faces if d else []) if not is_too_small(to_face(f))]
        if d is not None and d.outcome == "multiple_faces" and d.chosen is None:
            jobs.refused[fid] = Refusal("multiple_faces", f"{d.detail} (refused when detected)")
            continue
        if len(usable) > 1 and policy != "consistent":
            usable = usable[:1] if policy == "largest" else []
            if usable:
                jobs.largest.add(fid)
            else:
                jobs.refused[fid] = Refusal("multiple_faces", f"{d.detail if d else ''} (refused)")
        for f in usable:
            jobs.image.append(fid)
            jobs.rank.append(f.rank)
            jobs.faces.append(to_face(f))
    return jobs


@dataclass(frozen=True)
class GalleryChoice:
    """The person's face in one gallery image under one model version."""

    vector: np.ndarray  # [d]
    face_rank: int
    chosen_by: str


def choose_gallery_faces(
    rt: Runtime,
    model: ModelRef,
    image: Sequence[int],
    rank: Sequence[int],
    vectors: np.ndarray,
) -> dict[int, GalleryChoice]:
    """Face vectors of gallery images (``vectors[k]``: face ``rank[k]`` of image ``image[k]``)
    -> the person's face per image: :func:`choose_faces` over each person's photos, the ones
    embedded before under this model (single-face ones, as stored) and these.
    """
    from index.vector_store import VectorStore
    from storage.embeddings import identity_ids_of, identity_vector_refs

    by_image: dict[int, list[int]] = {}
    for k, fid in enumerate(image):
        by_image.setdefault(int(fid), []).append(k)
    several = [fid for fid, ks in by_image.items() if len(ks) > 1]
    out: dict[int, GalleryChoice] = {}
    for fid, ks in by_image.items():
        if len(ks) == 1:
            out[fid] = GalleryChoice(vectors[ks[0]], int(rank[ks[0]]), "only")
    if not several:
        return out
    with rt.sessions() as s:
        owners = identity_ids_of(session=s, face_image_ids=list(by_image))
        people = sorted({owners[f] for f in several if f in owners})
        earlier = identity_vector_refs(
            session=s, model_version_id=model.id, identity_ids=people, chosen_by=["only"]
        )
    store = VectorStore(rt.settings.vector_store_dir(model.id), model.dim)
    for person in people:
        mine = [f for f in by_image if owners.get(f) == person]
        photos = [vectors[by_image[f]] for f in mine]
        before = earlier.get(person, [])
        if before:
            photos += [v[None] for v in store.read(before)]
        choices = choose_faces(photos, distance=model.distance, policy="consistent")
        for f, c in zip(mine, choices, strict=False):  # the earlier photos come after
            if f in out or c.face is None or c.chosen_by is None:
                continue
            k = by_image[f][c.face]
            out[f] = GalleryChoice(vectors[k], int(rank[k]), c.chosen_by)
    for f in several:  # an image without an owner (removed meanwhile): its largest face
        if f not in out:
            k = by_image[f][0]
            out[f] = GalleryChoice(vectors[k], int(rank[k]), "largest")
    return out
