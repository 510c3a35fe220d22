"""Scoring rules shared by identification, calibration and evaluation (one home for each).

- :func:`mean_template`: an identity's template is the mean of its vectors, re-normalised to
  unit length when the model's vectors are unit vectors.
- :func:`group_by_identity`: a search row becomes the best distance per identity.
- :func:`operating_threshold`: the threshold calibrated at a target FPIR, falling back to the
  largest finite non-mated distance when the target cannot be resolved.
- :func:`margin_threshold`: the default threshold when nothing was calibrated.
- :func:`false_match_tail` / :func:`threshold_for_gallery`: what a calibration keeps so that its
  threshold can be set again for the gallery size at the time it is used, when nothing better
  was computed at publish time;
- :func:`threshold_for_searches` / :func:`gallery_self_search`: the threshold set again when a
  grown gallery is published, from the calibration's searches run again against it and the
  gallery's own people searched against each other.
- :func:`claim_distances`: genuine and impostor distances of probe photos against enrolled
  templates (the evaluation's verification EER); :func:`verification_pairs`: the same over every
  pair of single photos (its ``pair_eer``).
- :data:`BACKBONE_SCORING`: per backbone, the scoring choices a new model version records
  (:class:`Scoring`): template, test-time flip, face choice in labelled photos.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from siamese.openset import threshold_at_fpir

#: How a candidate identity is scored: its nearest enrolled image, or its mean template.
TEMPLATES: tuple[str, ...] = ("best", "mean")
#: Whose face a labelled photo with several usable faces contributes (``--multiple-faces``),
#: default first: the one that agrees with the person's other photos, the largest, or none
#: (pipelines.services.face_choice).
MULTIPLE_FACES: tuple[str, ...] = ("consistent", "largest", "refuse")
#: Which non-mated searches calibrate an evaluation's threshold: the calibration unknowns and
#: the people the encoder was trained on (neither enrolled nor a test probe), or the former.
CALIBRATE_ON: tuple[str, ...] = ("unknown+train", "unknown")


@dataclass(frozen=True)
class Scoring:
    """How a model version's descriptors are made and scored, recorded with the version so
    that identify, the HTTP API, calibration and evaluation agree.

    ``template``: :data:`TEMPLATES`; ``flip_average``: each chip's descriptor averaged with its
    mirror's (dlib-resnet); ``multiple_faces``: whose face a labelled photo with several usable
    faces contributes (:data:`MULTIPLE_FACES`).
    """

    template: str = "best"
    flip_average: bool = False
    multiple_faces: str = "largest"

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(
                f"template must be one of {', '.join(TEMPLATES)}, got {self.template!r}"
            )
        if self.multiple_faces not in MULTIPLE_FACES:
            raise ValueError(
                f"--multiple-faces must be one of {', '.join(MULTIPLE_FACES)}, "
                f"got {self.multiple_faces!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Scoring:
        """A model version's record; versions from before it: nearest image, largest face."""
        return cls(**dict(data)) if data else cls()


#: The scoring a new model version of each backbone records unless told otherwise, chosen by
#: measurement (BENCHMARKS.md, "Defaults that win"): on celeba_wild the mean template and
#: test-time flip each raised dlib-resnet's DIR at FPIR 1%, and choosing the face that agrees
#: with the person's other photos raised it again; on AT&T (one face per photo) DIR@1% stays
#: 1.000. The from-scratch encoders keep the nearest image (their folds were tuned with it).
BACKBONE_SCORING: dict[str, Scoring] = {
    "dlib-resnet": Scoring(template="mean", flip_average=True, multiple_faces="consistent"),
    "small-cnn": Scoring(template="best", flip_average=False, multiple_faces="consistent"),
    "chopra2005": Scoring(template="best", flip_average=False, multiple_faces="consistent"),
}


def mean_template(vectors: np.ndarray, *, normalize: bool) -> np.ndarray:
    """[n, d] vectors of one identity -> [d] float32 template (unit length if ``normalize``)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"mean_template needs [n >= 1, d] vectors, got shape {vectors.shape}")
    m = vectors.mean(axis=0)
    if normalize:
        m = m / max(float(np.linalg.norm(m)), 1e-12)
    return m.astype(np.float32)


def mean_templates(
    vectors: np.ndarray, owner: np.ndarray, *, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Many identities' templates at once: [n, d] vectors and each one's owner -> (the owners
    present, sorted; [m, d] the mean of each one's vectors), as :func:`mean_template` per owner."""
    order = np.argsort(owner, kind="stable")
    sorted_owner = np.asarray(owner)[order]
    if sorted_owner.size == 0:
        return sorted_owner, np.zeros((0, vectors.shape[1]), np.float32)
    starts = np.flatnonzero(np.r_[True, sorted_owner[1:] != sorted_owner[:-1]])
    sums = np.add.reduceat(np.asarray(vectors, np.float32)[order], starts, axis=0)
    means = sums / np.diff(np.r_[starts, len(order)]).astype(np.float32)[:, None]
    if normalize:
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return sorted_owner[starts], means.astype(np.float32)


def group_by_identity(
    distances: np.ndarray,
    ids: np.ndarray,
    image_identity: Mapping[int, int],
    top_k: int,
) -> list[tuple[int, float, int]]:
    """One search row -> the ``top_k`` identities by their best distance.

    ``ids`` are face_image ids with FAISS's -1 padding; ids without a live row in SQL (removed
    since the last embed) are skipped, so a removed person is never returned.
    Returns (identity_id, distance, face_image_id), best first; ties keep search order.
    """
    best: dict[int, tuple[float, int]] = {}
    for d, fid in zip(distances.tolist(), ids.tolist(), strict=True):
        if fid < 0 or not np.isfinite(d):
            continue
        ident = image_identity.get(int(fid))
        if ident is None:
            continue
        if ident not in best or d < best[ident][0]:
            best[ident] = (float(d), int(fid))
    ranked = sorted(best.items(), key=lambda kv: kv[1][0])
    return [(ident, d, fid) for ident, (d, fid) in ranked[:top_k]]


def operating_threshold(target_fpir: float, nonmated_best: np.ndarray) -> float:
    """Distance threshold at ``target_fpir`` over non-mated best distances.

    When the target cannot be met by any finite threshold (too few searches), the fallback is
    the largest finite non-mated distance (every calibration search then counts as a false
    positive at most once), and 0.0 when no search found a candidate at all.
    """
    threshold = threshold_at_fpir(target_fpir, nonmated_best)
    if math.isfinite(threshold):
        return float(threshold)
    best = np.asarray(nonmated_best, dtype=np.float64)
    finite = best[np.isfinite(best)]
    return float(finite.max()) if finite.size else 0.0


#: Lowest per-comparison non-mated distances a calibration keeps (``false_match_tail``).
TAIL_KEEP = 4096


def false_match_tail(
    per_identity: np.ndarray | Iterable[np.ndarray], keep: int = TAIL_KEEP
) -> dict[str, Any]:
    """[searches, identities] non-mated distances of each calibration search to every enrolled
    identity (or those rows a few at a time) -> the per-comparison false-match curve's low end:
    the ``keep`` lowest distances, sorted, and how many comparisons there were (JSON-ready)."""
    chunks = [per_identity] if isinstance(per_identity, np.ndarray) else per_identity
    lowest, comparisons = np.zeros(0), 0
    for chunk in chunks:
        d = np.asarray(chunk, dtype=np.float64).ravel()
        d = d[np.isfinite(d)]
        comparisons += int(d.size)
        both = np.concatenate([lowest, d])
        lowest = np.sort(np.partition(both, keep - 1)[:keep] if both.size > keep else both)
    return {"lowest": lowest.tolist(), "comparisons": comparisons}


def threshold_for_gallery(
    threshold: float, tail: Mapping[str, Any], calibrated_identities: int, identities: int
) -> float:
    """The calibrated ``threshold`` set again for a gallery of ``identities`` people.

    A non-mated search is a false positive when any of the N enrolled identities is within the
    threshold, so for small rates FPIR grows about N-fold with the per-comparison false-match
    rate (FMR). The calibration measured both at its N: this keeps FPIR by keeping FMR x N, i.e.
    the new threshold is the per-comparison distance quantile at FMR x N_calibrated / N_now (the
    calibration's own FMR at its threshold, from ``tail``: :func:`false_match_tail`). It needs
    no independence between comparisons: only that a search's chance of an alarm grows in
    proportion to the number of people it is compared with.
    """
    lowest = np.asarray(tail.get("lowest") or [], dtype=np.float64)
    comparisons = int(tail.get("comparisons") or 0)
    if identities == calibrated_identities or calibrated_identities <= 0 or identities <= 0:
        return float(threshold)
    if lowest.size == 0 or comparisons == 0:
        return float(threshold)
    within = int(np.searchsorted(lowest, threshold, side="right"))  # comparisons <= threshold
    allowed = within * calibrated_identities / identities  # comparisons <= the new threshold
    n = int(math.floor(allowed))
    if n >= lowest.size:  # a smaller gallery beyond the kept tail: the calibrated threshold
        return float(max(threshold, lowest[-1]))
    # just below the (n+1)-th lowest distance: n comparisons are within
    t = float(np.nextafter(lowest[n], -np.inf))
    return min(t, float(threshold)) if identities > calibrated_identities else max(t, threshold)


def gallery_self_search(per_identity: np.ndarray, own: np.ndarray) -> np.ndarray:
    """[n, identities] distances of enrolled faces to every identity's template, and [n] the
    column of each face's own identity -> [n] each face's nearest other identity: a non-mated
    search of the gallery as it is now, known without new labels (``threshold_for_searches``)."""
    d = np.array(per_identity, dtype=np.float64, copy=True)
    own = np.asarray(own, dtype=np.int64)
    if d.ndim != 2 or own.shape != (d.shape[0],):
        raise ValueError(f"need [n, identities] distances and [n] own columns, got {d.shape}")
    d[np.arange(len(own)), own] = np.inf
    return d.min(axis=1) if d.shape[1] else np.full(len(own), np.inf)


#: A threshold set for a gallery of N people still serves N(1 +- this): FPIR moves about in
#: proportion to N (by ~0.05 points at a 1% target for 5%), so the gallery is searched again
#: (``threshold_for_searches``) only when its size has moved further than this from the size
#: the threshold was last set for, and a publish after one new enrolment reads nothing again.
SEARCH_AGAIN_GROWTH = 0.05


def set_for_size(identities: int, set_for: int | None) -> bool:
    """Whether a threshold set for ``set_for`` people serves a gallery of ``identities``."""
    if not set_for:
        return False
    return abs(identities - set_for) <= SEARCH_AGAIN_GROWTH * set_for


def threshold_for_searches(
    target_fpir: float, calibration_best: np.ndarray, gallery_best: np.ndarray
) -> float:
    """The threshold at ``target_fpir`` for the gallery as published now, from two kinds of
    non-mated searches against it: the calibration's own searches, run again against this
    gallery (their descriptors kept), and each enrolled face against the other enrolled people
    (:func:`gallery_self_search`). Pooled, they give one quantile, as the calibration did.

    Why not only :func:`threshold_for_gallery`: its per-comparison model assumes that the
    people enrolled since calibration are compared with searches as the calibrated ones were.
    Look-alike pairs break that: on celeba_wild a gallery grown 4x after calibrating with 40
    people raised FPIR 2-10x for the same searches, because a few pairs of people this network
    places close (one pair ~20 alarming photos) are rarely among 40 (BENCHMARKS.md, issue 20).
    Searching again sees them; the gallery's own people add look-alikes among the enrolled,
    and more searches resolve the target's quantile more finely. No labels beyond the
    enrolment's are needed, and nothing is tuned: the pool's quantile at the target."""
    pooled = np.concatenate(
        [np.asarray(calibration_best, np.float64).ravel(), np.asarray(gallery_best, np.float64)]
    )
    if pooled.size == 0:
        raise ValueError("no non-mated searches to set a threshold with")
    return operating_threshold(target_fpir, pooled)


def margin_threshold(margin: float) -> float:
    """The threshold when nothing was calibrated: half the contrastive margin.

    The contrastive loss pulls genuine pairs towards distance 0 and pushes impostors out to at
    least ``m``; half-way between the two targets is the boundary the loss itself implies. It
    ignores how well training separated people, so calibrate before relying on it.
    """
    return margin / 2.0


def claim_distances(
    per_identity: np.ndarray, true_ids: np.ndarray, identities: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) distances of verification as the gallery answers a claim.

    ``per_identity`` [n, P]: each probe photo's distance to each enrolled person under the
    model's scoring (``PhotoSearches.per_identity``: the template identification uses, every
    face of the photo, flip as recorded); ``true_ids`` [n]: whose photo it is (unknowns too).
    A genuine claim is a photo against its own person's template, an impostor claim against
    any other enrolled person's: a verification transaction compares a sample with the
    claimed identity's enrolled template (ISO/IEC 19795-1), so EER measures the comparison
    siamid makes, not one between two single photos (``verification_pairs``)."""
    d = np.asarray(per_identity, dtype=np.float64)
    own = np.asarray(true_ids, dtype=object)[:, None] == np.asarray(identities, dtype=object)
    known = np.isfinite(d)
    return d[own & known], d[~own & known]


def verification_pairs(
    vectors: np.ndarray, labels: np.ndarray, distance: str
) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) distances over every unordered pair of ``vectors``."""
    from siamese.distances import pairwise_distances
    from siamese.metrics import pair_distances_from_matrix

    d = pairwise_distances(vectors, vectors, distance)
    return pair_distances_from_matrix(np.asarray(d), np.asarray(labels))
