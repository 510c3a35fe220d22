"""Open-set identification: who is this, or nobody we know?

A probe is embedded, the published index searched, candidates grouped per identity (best
distance, or the distance to the identity's mean template), and the best identity accepted only
when its distance is within the threshold; otherwise the answer is ``unknown``.

The threshold, in order of precedence:
1. given explicitly (``--threshold``);
2. calibrated with ``siamid calibrate`` on people who are not enrolled, at a target FPIR, and
   stored with the model and index version;
3. derived from the training margin: ``m / 2``. The contrastive loss pulls genuine pairs
   towards distance 0 and pushes impostors out to at least ``m``; half-way between the two
   targets is the boundary the loss itself implies when nothing else is known. It ignores how
   well training actually separated people, so calibrate before relying on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy.orm import sessionmaker

from pipelines.embed import ModelRef, encode_files, load_encoder, resolve_model
from pipelines.errors import SiamidError
from pipelines.runtime import Runtime
from siamese.images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

Template = Literal["best", "mean"]


@dataclass(frozen=True)
class Candidate:
    identity: str
    distance: float
    identity_id: int
    face_image_id: int


@dataclass
class Decision:
    probe: str
    decision: str  # "match" | "unknown" | "error"
    identity: str | None
    distance: float | None
    threshold: float
    threshold_source: str
    model_version: str
    index_version: int
    candidates: list[Candidate] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = [
            {"identity": c.identity, "distance": c.distance} for c in self.candidates
        ]
        return d


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


def margin_threshold(margin: float) -> float:
    """The default threshold derived from the contrastive margin (see the module docstring)."""
    return margin / 2.0


def probe_files(target: Path) -> list[Path]:
    """An image, or every image file under a folder (sorted)."""
    if target.is_dir():
        return sorted(
            p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
    return [target]


class Identifier:
    """The published index, its model and threshold, loaded once for many probes."""

    def __init__(
        self,
        rt: Runtime,
        *,
        threshold: float | None = None,
        top_k: int = 5,
        template: Template = "best",
        search_k: int | None = None,
    ) -> None:
        from index.vector_index import VectorIndex
        from storage.indexes import require_published_index

        if top_k < 1:
            raise ValueError(f"--top-k must be at least 1, got {top_k}")
        if template not in ("best", "mean"):
            raise ValueError(f"template must be 'best' or 'mean', got {template!r}")
        self.rt, self.top_k, self.template = rt, top_k, template
        with rt.sessions() as s:
            iv = require_published_index(session=s)
            self.index_version_id, path, sha = iv.id, iv.path, iv.sha256
            model_id = iv.model_version_id
        self.model: ModelRef = resolve_model(rt, str(model_id))
        self.index = VectorIndex.load(path, expected_sha256=sha, expected_dim=self.model.dim)
        self.encoder, self.encoder_config = load_encoder(self.model)
        self.search_k = search_k or max(50, 10 * top_k)
        self.threshold, self.threshold_source = self._threshold(threshold)
        # Read-only look-ups on the latency path: autocommit, so no BEGIN / ROLLBACK round
        # trips around each probe's one query (the sessions are still the caller's: ours).
        self.lookups = sessionmaker(rt.engine.execution_options(isolation_level="AUTOCOMMIT"))

    def _threshold(self, explicit: float | None) -> tuple[float, str]:
        from storage.calibration import latest_calibration
        from storage.embeddings import count_live_identities
        from storage.registry import get_model_version

        if explicit is not None:
            return float(explicit), "explicit"
        with self.rt.sessions() as s:
            cal = latest_calibration(session=s, model_version_id=self.model.id)
            if cal is not None:
                now = count_live_identities(session=s)
                growth = self.rt.settings.gallery_growth_warning
                if cal.gallery_identities and now > growth * cal.gallery_identities:
                    logger.warning(
                        "the gallery has grown from %d to %d identities since calibration %d; "
                        "FPIR grows with gallery size: run `siamid calibrate` again",
                        cal.gallery_identities,
                        now,
                        cal.id,
                    )
                return float(cal.threshold), f"calibrated@fpir={cal.target_fpir:g}"
            margin = get_model_version(session=s, ref=self.model.id).margin
        return margin_threshold(margin), "margin/2"

    def embed_paths(self, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        items = [(i, str(p), None) for i, p in enumerate(paths)]
        return encode_files(
            self.encoder, self.encoder_config, items, self.rt.limits, batch_size=64, workers=0
        )

    def search(self, vectors: np.ndarray) -> list[list[Candidate]]:
        """Candidates per probe vector: top-k identities, metadata by primary key."""
        from storage.embeddings import image_owners

        k = min(self.search_k, max(self.index.ntotal, 1))
        dist, ids = self.index.search(vectors, k)
        with self.lookups() as s:
            owners = image_owners(session=s, face_image_ids=np.unique(ids[ids >= 0]).tolist())
            owner = {fid: ident for fid, (ident, _) in owners.items()}
            grouped = [
                group_by_identity(dist[i], ids[i], owner, self.top_k) for i in range(len(vectors))
            ]
            if self.template == "mean":
                grouped = self._mean_template(s, vectors, grouped)
        names = dict(owners.values())
        return [[Candidate(names[g], d, g, f) for g, d, f in row] for row in grouped]

    def _mean_template(
        self, session: Any, vectors: np.ndarray, grouped: list[list[tuple[int, float, int]]]
    ) -> list[list[tuple[int, float, int]]]:
        """Re-score each candidate identity by the distance to the mean of its vectors."""
        from index.vector_store import VectorStore
        from siamese.distances import pairwise_distances
        from storage.embeddings import identity_vector_refs

        store = VectorStore(self.rt.settings.vectors_dir / f"model-{self.model.id}", self.model.dim)
        wanted = sorted({g for row in grouped for g, _, _ in row})
        refs = identity_vector_refs(
            session=session, model_version_id=self.model.id, identity_ids=wanted
        )
        means: dict[int, np.ndarray] = {}
        for ident, ident_refs in refs.items():
            m = store.read(ident_refs).mean(axis=0)
            if self.encoder_config.normalize:
                m = m / max(float(np.linalg.norm(m)), 1e-12)
            means[ident] = m.astype(np.float32)
        out = []
        for v, row in zip(vectors, grouped, strict=True):
            rescored = [
                (
                    g,
                    float(pairwise_distances(v[None], means[g][None], self.model.distance)[0, 0]),
                    f,
                )
                for g, _, f in row
                if g in means
            ]
            out.append(sorted(rescored, key=lambda t: t[1]))
        return out

    def decide(self, probe: str, candidates: list[Candidate]) -> Decision:
        best = candidates[0] if candidates else None
        match = best is not None and best.distance <= self.threshold
        return Decision(
            probe=probe,
            decision="match" if match else "unknown",
            identity=best.identity if match and best else None,
            distance=best.distance if best else None,
            threshold=self.threshold,
            threshold_source=self.threshold_source,
            model_version=self.model.name,
            index_version=self.index_version_id,
            candidates=candidates,
        )

    def identify(self, paths: Sequence[Path]) -> list[Decision]:
        """A decision per probe, in order; unreadable probes get ``decision="error"``."""
        keys, vectors, errors = self.embed_paths(paths)
        found = dict(zip(keys.tolist(), self.search(vectors), strict=True)) if keys.size else {}
        out = []
        for i, p in enumerate(paths):
            if i in errors:
                out.append(
                    Decision(
                        str(p),
                        "error",
                        None,
                        None,
                        self.threshold,
                        self.threshold_source,
                        self.model.name,
                        self.index_version_id,
                        error=errors[i],
                    )
                )
            else:
                out.append(self.decide(str(p), found[i]))
        return out


class CalibrationError(SiamidError):
    """Calibration data that cannot give a trustworthy threshold."""


def calibrate(rt: Runtime, data: Path | Sequence[Path], target_fpir: float) -> dict[str, Any]:
    """Threshold at ``target_fpir`` from non-mated searches by people who are NOT enrolled.

    ``data`` is one ImageFolder or several (their people pooled). More people give a steadier
    threshold: with N searches FPIR is resolved in steps of 1/N. The people the encoder was
    trained on count too, as long as they are not enrolled: on AT&T their distances to the
    gallery were like those of unseen people (BENCHMARKS.md, "Open-set identification").
    """
    from pipelines.gallery import scan_image_folder
    from siamese.openset import fpir_at, threshold_at_fpir
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
    ident = Identifier(rt, threshold=0.0, top_k=1)
    keys, vectors, errors = ident.embed_paths([it.path for it in items])
    for k, e in errors.items():
        logger.warning("calibration image %s skipped: %s", items[k].path, e)
    cands = ident.search(vectors)
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
    threshold = threshold_at_fpir(target_fpir, best)
    if not np.isfinite(threshold):
        threshold = float(np.max(best[np.isfinite(best)])) if np.isfinite(best).any() else 0.0
    realised = fpir_at(threshold, best)
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
                "skipped": len(errors),
            },
        )
        cal_id = row.id
    return {
        "calibration": cal_id,
        "threshold": threshold,
        "target_fpir": target_fpir,
        "realised_fpir": realised,
        "nonmated_searches": n,
        "model_version": ident.model.name,
        "index_version": ident.index_version_id,
    }
