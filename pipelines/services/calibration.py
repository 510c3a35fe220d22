"""Calibrating the reject threshold at a target FPIR on people who are not enrolled."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.services.errors import SiamidError
from pipelines.services.gallery import scan_image_folder
from pipelines.services.identification import Identifier
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import false_match_tail, mean_template, operating_threshold

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
    enc = ident.embed_paths([it.path for it in items])
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
            },
        )
        cal_id = row.id
    return Calibration(
        cal_id, threshold, target_fpir, realised, n, ident.model.name, ident.index_version_id
    )


def identity_distances(ident: Identifier, vectors: np.ndarray, chunk: int = 256) -> np.ndarray:
    """[n, identities] distance of each vector to every enrolled identity under this
    identifier's template (exact: every live vector of the model, not the index's top-k);
    what calibration keeps to set its threshold again as the gallery grows."""
    from index.vector_store import VectorStore
    from siamese.distances import pairwise_distances
    from storage.embeddings import identity_ids_of, live_embeddings

    with ident.lookups() as s:
        rows = live_embeddings(session=s, model_version_id=ident.model.id)
        owners = identity_ids_of(session=s, face_image_ids=[f for f, _ in rows])
    rows = [(f, r) for f, r in rows if f in owners]
    if not rows or len(vectors) == 0:
        return np.zeros((len(vectors), 0))
    store = VectorStore(ident.rt.settings.vector_store_dir(ident.model.id), ident.model.dim)
    who = np.asarray([owners[f] for f, _ in rows])
    order = np.argsort(who, kind="stable")
    gallery, who = store.read([rows[i][1] for i in order]), who[order]
    starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
    if ident.template == "mean":
        normalize = bool(ident.encoder.config.normalize)
        ends = np.r_[starts[1:], len(who)]
        spans = zip(starts, ends, strict=True)
        gallery = np.stack([mean_template(gallery[a:b], normalize=normalize) for a, b in spans])
    out = []
    for i in range(0, len(vectors), chunk):
        d = pairwise_distances(vectors[i : i + chunk], gallery, ident.model.distance)
        out.append(d if ident.template == "mean" else np.minimum.reduceat(d, starts, axis=1))
    return np.concatenate(out)
