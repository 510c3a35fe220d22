"""Calibrating the reject threshold at a target FPIR on people who are not enrolled."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.services.errors import SiamidError
from pipelines.services.gallery import scan_image_folder
from pipelines.services.identification import Identifier
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import (
    false_match_tail,
    gallery_self_search,
    mean_templates,
    operating_threshold,
    set_for_size,
    threshold_for_searches,
)

logger = logging.getLogger(__name__)


class CalibrationError(SiamidError):
    """Calibration data that cannot give a trustworthy threshold."""


@dataclass
class Calibration:
    calibration: int
    threshold: float
    target_fpir: float
    realised_fpir: float
    nonmated_searches: int
    model_version: str
    index_version: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(
    rt: Runtime, data: Path | Sequence[Path], target_fpir: float, *, faces: str | None = None
) -> Calibration:
    """Threshold at ``target_fpir`` from non-mated searches by people who are NOT enrolled.

    ``data`` is one ImageFolder or several (their people pooled). More people give a steadier
    threshold: with N searches FPIR is resolved in steps of 1/N. The people the encoder was
    trained on count too, as long as they are not enrolled: on AT&T their distances to the
    gallery were like those of unseen people (BENCHMARKS.md, "Open-set identification").
    """
    from pipelines.services.photo_faces import labelled_file_vectors
    from siamese.openset import fpir_at
    from storage.calibration import add_calibration
    from storage.embeddings import count_live_identities, count_live_images
    from storage.identities import existing_names

    if not 0.0 < target_fpir < 1.0:
        raise CalibrationError(f"--target-fpir must be in (0, 1), got {target_fpir}")
    folders = [data] if isinstance(data, Path) else list(data)
    items = [it for d in folders for it in scan_image_folder(d) if it.precheck is None]
    where = ", ".join(map(str, folders))
    if not items:
        raise CalibrationError(
            f"{where} has no images; give PATH/<person>/<image> of people who are NOT enrolled"
        )
    with rt.sessions() as s:
        enrolled = existing_names(session=s, names=sorted({str(it.identity) for it in items}))
    if enrolled:
        raise CalibrationError(
            f"calibration needs people who are NOT enrolled, but {len(enrolled)} of the people in "
            f"{where} are in the gallery (e.g. {sorted(enrolled)[:3]}); use other people"
        )
    ident = Identifier(rt, threshold=0.0, top_k=1, faces=faces)
    # the person's face of each photo, chosen as the gallery's are
    enc = labelled_file_vectors(
        rt, ident.model, [it.path for it in items], [str(it.identity) for it in items]
    )
    for k, e in enc.errors.items():
        logger.warning("calibration image %s skipped: %s", items[k].path, e)
    cands = ident.search(enc.vectors)
    best = np.asarray([c[0].distance if c else np.inf for c in cands], dtype=np.float64)
    n = int(best.size)
    if n == 0:
        raise CalibrationError(f"no image of {where} could be embedded")
    if target_fpir * n < 1:
        logger.warning(
            "%d non-mated searches cannot resolve FPIR %.4g (the smallest step is "
            "%.4g); add more people who are not enrolled",
            n,
            target_fpir,
            1 / n,
        )
    threshold = operating_threshold(target_fpir, best)
    realised = fpir_at(threshold, best)
    # what it takes to set the threshold again for another gallery size (threshold_for_gallery)
    tail = false_match_tail(identity_distances(ident, enc.vectors))
    # and the searches themselves, to run them again against a grown gallery at publish time
    # (threshold_for_published); by content, so the same searches are kept once
    vectors = np.ascontiguousarray(enc.vectors, dtype=np.float32)
    searches_file = f"searches-{hashlib.sha256(vectors.tobytes()).hexdigest()[:16]}.npy"
    _searches_file(rt, searches_file).parent.mkdir(parents=True, exist_ok=True)
    np.save(_searches_file(rt, searches_file), vectors)
    with rt.sessions.begin() as s:
        row = add_calibration(
            session=s,
            model_version_id=ident.model.id,
            index_version_id=ident.index_version_id,
            target_fpir=target_fpir,
            threshold=threshold,
            realised_fpir=realised,
            nonmated_searches=n,
            gallery_identities=count_live_identities(session=s),
            gallery_images=count_live_images(session=s),
            details={
                "data": [str(d) for d in folders],
                "people": len({it.identity for it in items}),
                "nonmated_best_quantiles": {
                    f"p{q}": float(np.quantile(best, q / 100)) for q in (1, 5, 50)
                },
                "skipped": len(enc.errors),
                "template": ident.template,
                "false_match_tail": tail,
                "searches_file": searches_file,
            },
        )
        cal_id = row.id
    return Calibration(
        cal_id, threshold, target_fpir, realised, n, ident.model.name, ident.index_version_id
    )


#: Distances held at once when searches are compared with a whole gallery (128 MB as float64).
DISTANCE_BUDGET = 1 << 24


@dataclass
class LiveGallery:
    """The live vectors of the identifier's model, grouped by identity (``starts``: where each
    identity's run begins), and what a search is compared with: one template per identity
    under ``mean``, every vector under ``best``."""

    ident: Identifier
    vectors: np.ndarray  # [V, d], sorted by identity
    starts: np.ndarray  # [N] offsets of each identity's first vector
    compared: np.ndarray  # [N, d] templates, or [V, d] vectors

    @classmethod
    def load(cls, ident: Identifier) -> LiveGallery:
        vectors, slots = ident.means.live_vectors()
        if not len(slots):
            empty = np.zeros((0, ident.model.dim), np.float32)
            return cls(ident, empty, np.zeros(0, np.int64), empty)
        starts = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
        compared = vectors
        if ident.template == "mean":
            compared = mean_templates(vectors, slots, normalize=ident.means.normalize)[1]
        return cls(ident, vectors, starts, compared)

    def distance_chunks(
        self, vectors: np.ndarray, budget: int = DISTANCE_BUDGET
    ) -> Iterator[np.ndarray]:
        """The rows of :meth:`distances`, a few at a time: no chunk (nor its distances to every
        compared vector) holds more than about ``budget`` numbers, whatever the gallery size."""
        from siamese.distances import pairwise_distances

        step = max(1, budget // max(len(self.compared), 1))
        mean = self.ident.template == "mean"
        for i in range(0, len(vectors), step):
            d = pairwise_distances(vectors[i : i + step], self.compared, self.ident.model.distance)
            yield d if mean else np.minimum.reduceat(d, self.starts, axis=1)

    def distances(self, vectors: np.ndarray) -> np.ndarray:
        """[n, identities] distance of each vector to every identity (exact)."""
        if len(self.starts) == 0 or len(vectors) == 0:
            return np.zeros((len(vectors), len(self.starts)))
        return np.concatenate(list(self.distance_chunks(vectors)))

    def nearest(
        self, vectors: np.ndarray, own: np.ndarray | None = None, budget: int = DISTANCE_BUDGET
    ) -> np.ndarray:
        """[n] each vector's distance to its nearest identity, other than the one at column
        ``own[i]`` when given (:func:`~pipelines.services.scoring.gallery_self_search`),
        chunk by chunk: the [n, identities] matrix is never held (5,000 searches of a gallery
        of 100,000 people would be 4 GB)."""
        if len(self.starts) == 0 or len(vectors) == 0:
            return np.full(len(vectors), np.inf)
        out, at = [], 0
        for d in self.distance_chunks(vectors, budget):
            rows = slice(at, at + len(d))
            out.append(d.min(axis=1) if own is None else gallery_self_search(d, own[rows]))
            at += len(d)
        return np.concatenate(out)

    def self_search(self, most: int) -> np.ndarray:
        """At most ``most`` enrolled vectors (seeded sample) searched against the other
        identities (:func:`~pipelines.services.scoring.gallery_self_search`)."""
        picked = np.arange(len(self.vectors))
        if len(picked) > most:
            picked = np.sort(np.random.default_rng(0).choice(picked, most, replace=False))
        own = np.searchsorted(self.starts, picked, side="right") - 1
        return self.nearest(self.vectors[picked], own)


def identity_distances(ident: Identifier, vectors: np.ndarray) -> Iterator[np.ndarray]:
    """The distance of each vector to every enrolled identity under this identifier's
    template (exact: every live vector of the model, not the index's top-k), a few rows at a
    time; what calibration keeps to set its threshold again as the gallery grows."""
    return LiveGallery.load(ident).distance_chunks(vectors)


#: Enrolled faces searched against the other enrolled people when a threshold is set again
#: for a grown gallery: enough to resolve FPIR 0.1% in steps of 0.02%, bounded for a large
#: gallery (each costs one row of distances to every identity).
GALLERY_SEARCHES = 5000


def _searches_file(rt: Runtime, name: str) -> Path:
    return rt.settings.home_dir / "calibrations" / name


def threshold_for_published(rt: Runtime) -> float | None:
    """When the published gallery holds another number of people than the newest calibration
    of its model was run against (more than ``SEARCH_AGAIN_GROWTH`` away from the size the
    threshold was last set for, :func:`~pipelines.services.scoring.set_for_size`), set the
    threshold again for it (the embed flow calls this
    after publishing): the calibration's own searches (their descriptors, kept by
    :func:`calibrate`) run again against this gallery, pooled with up to
    :data:`GALLERY_SEARCHES` enrolled faces searched against the other people
    (:func:`~pipelines.services.scoring.threshold_for_searches`, which says why). The result
    is kept with the calibration (``details.for_gallery``) for
    :func:`~pipelines.services.threshold.resolve_threshold`; None when there was nothing to do.
    """
    from siamese.openset import fpir_at
    from storage.calibration import latest_calibration, set_calibration_details
    from storage.embeddings import count_live_identities
    from storage.indexes import published_index

    with rt.sessions() as s:
        iv = published_index(session=s)
        cal = (
            None
            if iv is None
            else latest_calibration(session=s, model_version_id=iv.model_version_id)
        )
        if cal is None:
            return None
        now = count_live_identities(session=s)
        cal_id, target, then = cal.id, cal.target_fpir, cal.gallery_identities
        details = dict(cal.details or {})
    name = details.get("searches_file")
    last = (details.get("for_gallery") or {}).get("identities") or then
    if not name or now < 2 or now == then or set_for_size(now, last):
        return None
    path = _searches_file(rt, str(name))
    if not path.is_file():
        logger.warning(
            "calibration %d's searches (%s) are gone: its threshold is set for %d identities "
            "by the per-comparison rule; run `siamid calibrate` again",
            cal_id,
            path,
            now,
        )
        return None
    ident = Identifier(rt, threshold=0.0, top_k=1)
    gallery = LiveGallery.load(ident)
    searches = gallery.nearest(np.load(path))
    own = gallery.self_search(GALLERY_SEARCHES)
    threshold = threshold_for_searches(target, searches, own)
    record = {
        "identities": now,
        "index_version": ident.index_version_id,
        "threshold": threshold,
        "calibration_searches": int(searches.size),
        "gallery_searches": int(own.size),
        "fpir": {
            "calibration_searches": fpir_at(threshold, searches),
            "gallery_searches": fpir_at(threshold, own),
        },
    }
    with rt.sessions.begin() as s:
        set_calibration_details(
            session=s, calibration_id=cal_id, details={**details, "for_gallery": record}
        )
    logger.info(
        "threshold of calibration %d (%d identities) set again for %d identities: %.4f, from "
        "%d calibration searches and %d of the gallery's own",
        cal_id,
        then,
        now,
        threshold,
        searches.size,
        own.size,
    )
    return threshold
