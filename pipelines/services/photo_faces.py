"""Evaluation's descriptors and searches, face by face (issue 20).

- :class:`EmbeddedSet`: every usable face of every photo of a data set, embedded by one model;
- :func:`person_faces`: the person's face in each of their labelled photos (enrolment,
  verification pairs), by :func:`~pipelines.services.face_choice.choose_faces`;
- :func:`photo_searches`: every usable face of a probe is a search, as ``siamid identify``
  answers it; a photo is found when one of its faces is accepted as its person, and a false
  positive when any of its faces is accepted;
- :func:`mean_templates`: one mean template per person.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.services.face_choice import choose_faces
from pipelines.services.scoring import mean_template

if TYPE_CHECKING:
    from faces.face import Face
    from pipelines.services.encoding import Encoded
    from pipelines.services.models import LoadedEncoder, ModelRef
    from pipelines.services.refusals import Refusal
    from pipelines.services.runtime import Runtime
    from siamese.images import DecodeLimits


@dataclass
class EmbeddedSet:
    """Every usable face of every image of an evaluation data set, embedded by one model.

    ``face_vectors[face_start[r]:face_start[r + 1]]`` are the faces of row ``r`` (as in the
    data set), largest first; whole-image mode has one "face" per image. A photo in detect mode
    without a face to align has none: it enrols nothing, and as a search it gets no answer (a
    miss if mated, else a rejection).
    """

    face_vectors: np.ndarray  # [F, d]
    face_start: np.ndarray  # [N + 1] int64 offsets into face_vectors
    distance: str
    normalized: bool  # the model's vectors are unit length (its mean templates are too)

    @classmethod
    def one_per_row(
        cls, vectors: np.ndarray, distance: str, normalized: bool, valid: np.ndarray | None = None
    ) -> EmbeddedSet:
        """One face per row (rows where ``valid`` is False have none)."""
        keep = np.ones(len(vectors), dtype=bool) if valid is None else np.asarray(valid, bool)
        start = np.concatenate([[0], np.cumsum(keep)]).astype(np.int64)
        return cls(np.asarray(vectors)[keep], start, distance, normalized)

    @property
    def rows(self) -> int:
        return len(self.face_start) - 1

    @property
    def dim(self) -> int:
        return int(self.face_vectors.shape[1])

    def n_faces(self) -> np.ndarray:
        """[N] usable faces per row."""
        return np.diff(self.face_start)

    def has_vector(self) -> np.ndarray:
        """[N] bool: which rows have at least one face."""
        return self.n_faces() > 0

    def faces_of(self, row: int) -> np.ndarray:
        """[n, d] the faces of one row, largest first."""
        return self.face_vectors[self.face_start[row] : self.face_start[row + 1]]

    def face_rows(self, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(face indices, position in ``rows`` of each face's photo) of ``rows``' faces."""
        starts, counts = self.face_start[rows], self.n_faces()[rows]
        idx = np.concatenate(
            [np.arange(a, a + c) for a, c in zip(starts, counts, strict=True)] or [np.zeros(0)]
        ).astype(np.int64)
        owner = np.repeat(np.arange(len(rows)), counts)
        return idx, owner


@dataclass
class PersonFaces:
    """The person's face in each of a set of labelled rows (``chosen_by`` as in face_choice)."""

    rows: list[int]  # rows with a chosen face
    vectors: np.ndarray  # [len(rows), d]
    chosen_by: Counter[str]
    not_largest: int  # rows whose chosen face is not their largest


def person_faces(
    embedded: EmbeddedSet, names: np.ndarray, rows: list[int], policy: str
) -> PersonFaces:
    """Each person's face in their ``rows`` (:func:`~pipelines.services.face_choice.
    choose_faces` over that person's rows), as their labelled photos would be enrolled."""
    by_person: dict[str, list[int]] = {}
    for r in rows:
        by_person.setdefault(str(names[r]), []).append(r)
    kept: list[int] = []
    vecs: list[np.ndarray] = []
    why: Counter[str] = Counter()
    not_largest = 0
    for person_rows in by_person.values():
        photos = [embedded.faces_of(r) for r in person_rows]
        for r, photo, c in zip(
            person_rows,
            photos,
            choose_faces(photos, distance=embedded.distance, policy=policy),
            strict=True,
        ):
            if c.face is None:
                continue
            kept.append(r)
            vecs.append(photo[c.face])
            why[str(c.chosen_by)] += 1
            not_largest += c.face != 0
    dim = embedded.dim
    out = np.asarray(vecs, dtype=np.float32).reshape(len(vecs), dim)
    return PersonFaces(kept, out, why, not_largest)


@dataclass
class PhotoSearches:
    """The searches of a list of probe photos, every usable face of each one a search."""

    face_dist: np.ndarray  # [F, k] candidates of each face, nearest first
    face_who: np.ndarray  # [F, k] their identities (object; None pads)
    owner: np.ndarray  # [F] position of each face's photo in the probe list
    n: int  # probe photos
    best_dist: np.ndarray = field(init=False)  # [n] nearest candidate over the photo's faces
    best_id: list[str | None] = field(init=False)  # [n] its identity

    def __post_init__(self) -> None:
        from siamese.openset import nonmated_best_from_candidates

        face_best, face_best_id = nonmated_best_from_candidates(
            self.face_dist, self.face_who, pad_id=None
        )
        self.best_dist = np.full(self.n, np.inf)
        self.best_id = [None] * self.n
        for f in np.argsort(face_best, kind="stable")[::-1]:  # the nearest face wins
            self.best_dist[self.owner[f]] = face_best[f]
            self.best_id[self.owner[f]] = face_best_id[f]

    def mated(self, true_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[n] (distance, rank) of each photo's true identity: of a face that ranks it first
        (the nearest such face), else of the face that ranks it best; ``inf`` when absent."""
        from siamese.openset import ranks_from_candidates

        fd, fr = ranks_from_candidates(
            self.face_dist, self.face_who, np.asarray(true_ids)[self.owner], pad_id=None
        )
        dist, rank = np.full(self.n, np.inf), np.full(self.n, np.inf)
        for f in np.lexsort((fd, fr))[::-1]:  # by rank, then distance: the first one wins
            dist[self.owner[f]], rank[self.owner[f]] = fd[f], fr[f]
        return dist, rank

    def per_identity(self, identities: list[str]) -> np.ndarray:
        """[n, len(identities)] each photo's distance to each identity: its nearest face's
        distance to the identity's nearest enrolled entry (its template under ``mean``);
        ``inf`` where the photo has no face or the lists miss the identity."""
        out = np.full((self.n, len(identities)), np.inf)
        column = {str(who): j for j, who in enumerate(identities)}
        cols = np.asarray(
            [-1 if w is None else column.get(str(w), -1) for w in self.face_who.ravel()],
            dtype=np.int64,
        ).reshape(self.face_dist.shape)
        rows = np.broadcast_to(self.owner[:, None], cols.shape)
        hit = cols >= 0
        np.minimum.at(out, (rows[hit], cols[hit]), self.face_dist[hit])
        return out


def photo_searches(
    index: Any, embedded: EmbeddedSet, names: np.ndarray, rows: list[int]
) -> PhotoSearches:
    """Search ``index`` (ids: data set rows) with every face of each of ``rows``; exact and
    complete candidate lists (every enrolled template)."""
    k = index.ntotal
    faces, owner = embedded.face_rows(rows)
    if faces.size == 0 or k == 0:
        dist, who = np.zeros((faces.size, 0)), np.zeros((faces.size, 0), dtype=object)
    else:
        dist, ids = index.search(embedded.face_vectors[faces], k)
        who = names[np.clip(ids, 0, None)]  # object array: a copy
        who[ids < 0] = None  # faiss pads short lists with -1
        dist = dist.astype(np.float64)
    return PhotoSearches(dist, who, owner, len(rows))


def mean_templates(
    vectors: np.ndarray, names: np.ndarray, *, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One :func:`~pipelines.services.scoring.mean_template` per person of ``names`` ([n], one
    per vector); ids: the position of each person's first vector."""
    by_person: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_person.setdefault(str(name), []).append(i)
    means = [mean_template(vectors[rs], normalize=normalize) for rs in by_person.values()]
    ids = [rs[0] for rs in by_person.values()]
    dim = vectors.shape[1]
    return np.asarray(means, dtype=np.float32).reshape(-1, dim), np.asarray(ids, dtype=np.int64)


def embed_every_face(
    encoder: LoadedEncoder,
    model: ModelRef,
    paths: Sequence[str | Path],
    faces: Sequence[Sequence[Face]],
    limits: DecodeLimits,
    batch_size: int = 64,
) -> tuple[EmbeddedSet, dict[int, Refusal]]:
    """Every face of ``faces[i]`` (largest first) cropped from ``paths[i]`` and embedded, one
    batch for them all; a photo with a face that cannot be encoded keeps none, and its refusal
    is keyed by its position."""
    from pipelines.services.encoding import encode_paths

    jobs = [(i, f) for i, photo in enumerate(faces) for f in photo]
    enc = encode_paths(
        encoder,
        [paths[i] for i, _ in jobs],
        limits,
        spec=model.crop,
        faces=[f for _, f in jobs],
        batch_size=batch_size,
        workers=0,
    )
    errors = {jobs[k][0]: e for k, e in enc.errors.items()}
    order = np.argsort(enc.keys, kind="stable")  # each photo's faces stay largest first
    photo = np.asarray([jobs[k][0] for k in enc.keys[order].tolist()], dtype=np.int64)
    ok = ~np.isin(photo, list(errors))
    counts = np.bincount(photo[ok], minlength=len(paths))
    embedded = EmbeddedSet(
        enc.vectors[order][ok].reshape(int(ok.sum()), model.dim),
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        model.distance,
        bool(encoder.config.normalize),
    )
    return embedded, errors


def labelled_file_vectors(
    rt: Runtime, model: ModelRef, paths: Sequence[str | Path], names: Sequence[str]
) -> Encoded:
    """One vector per labelled file outside the gallery (calibration's people), keyed by list
    position: the person's face, chosen among the photo's usable faces as the gallery's are
    (:func:`person_faces` over each person's files, the model's ``multiple_faces``); a file
    without one is an error. Whole-image models: the whole image."""
    from faces.face import is_too_small
    from pipelines.services.detection import detect_paths
    from pipelines.services.encoding import Encoded, encode_paths
    from pipelines.services.refusals import Refusal

    encoder = rt.encoders.get(model)
    if not model.crop.detect:
        return encode_paths(encoder, paths, rt.limits, spec=model.crop)
    found = detect_paths(paths, rt.limits)
    usable = [[f for f in pf.faces if not is_too_small(f)] for pf in found]
    embedded, errors = embed_every_face(encoder, model, paths, usable, rt.limits)
    counts = embedded.n_faces()
    for i, pf in enumerate(found):
        if counts[i] == 0 and i not in errors:
            errors[i] = Refusal(pf.outcome, pf.detail or "")
    rows = [i for i in range(len(paths)) if counts[i] > 0]
    chosen = person_faces(
        embedded, np.asarray(names, dtype=object), rows, model.scoring.multiple_faces
    )
    for i in sorted(set(rows) - set(chosen.rows)):
        errors[i] = Refusal("multiple_faces", f"{counts[i]} faces; --multiple-faces refuse")
    keys = np.asarray(chosen.rows, dtype=np.int64)
    at = np.argsort(keys, kind="stable")
    return Encoded(keys[at], chosen.vectors[at], errors)
