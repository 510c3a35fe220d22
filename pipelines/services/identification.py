"""Open-set identification: who is this, or nobody we know?

A probe is embedded, the published index searched, candidates grouped per identity (best
distance, or the distance to the identity's mean template), and the best identity accepted only
when its distance is within the threshold; otherwise the answer is ``unknown``.

The threshold, in order of precedence:
1. given explicitly (``--threshold``);
2. calibrated with ``siamid calibrate`` on people who are not enrolled, at a target FPIR, and
   stored with the model and index version;
3. :func:`~pipelines.services.scoring.margin_threshold` of the training margin.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from faces.face import Face
from pipelines.services.encoding import Encoded, Forward, encode_paths
from pipelines.services.errors import SiamidError
from pipelines.services.models import LoadedEncoder, ModelRef, resolve_model
from pipelines.services.owners import Owners
from pipelines.services.refusals import Refusal
from pipelines.services.runtime import Runtime
from pipelines.services.scoring import TEMPLATES
from pipelines.services.templates import MeanTemplates
from pipelines.services.threshold import resolve_threshold
from siamese.images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

Template = Literal["best", "mean"]


class ProbeError(SiamidError):
    """A probe path that cannot be read as images."""


@dataclass(frozen=True)
class Candidate:
    identity: str
    distance: float
    identity_id: int
    face_image_id: int


@dataclass
class Decision:
    """The answer for one face of a probe (for a whole-image model: for the probe).

    ``decision``: ``match`` | ``unknown``; or, with no answer, ``error`` (unreadable probe),
    ``no_face`` (detect mode: nothing found) or ``too_small`` (a face too small to align,
    reported with its box rather than guessed). ``box``: [left, top, right, bottom] of the face
    in the probe's pixels (detect mode), ``face``: its rank in the probe, 0 = largest.
    """

    probe: str
    decision: str
    identity: str | None
    distance: float | None
    threshold: float
    threshold_source: str
    model_version: str
    index_version: int
    candidates: list[Candidate] = field(default_factory=list)
    error: str | None = None
    box: list[float] | None = None
    face: int | None = None
    threshold_gallery: int | None = None  # enrolled identities the threshold was set for

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = [
            {"identity": c.identity, "distance": c.distance} for c in self.candidates
        ]
        return d


def probe_files(target: Path) -> list[Path]:
    """An image, or every image file under a folder (sorted); a clear error otherwise."""
    if not target.exists():
        raise ProbeError(f"{target} does not exist; give a probe image or a folder of them")
    if target.is_dir():
        try:
            files = sorted(
                p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
        except PermissionError as exc:
            raise ProbeError(
                f"cannot read the folder {target} ({exc.strerror}); check its permissions"
            ) from None
        if not files:
            raise ProbeError(f"no image files found in {target}")
        return files
    return [target]


class Identifier:
    """The published index, its model and threshold, loaded once for many probes."""

    def __init__(
        self,
        rt: Runtime,
        *,
        threshold: float | None = None,
        top_k: int = 5,
        template: Template | None = None,
        search_k: int | None = None,
        faces: str | None = None,
    ) -> None:
        from index.vector_index import VectorIndex
        from storage.indexes import require_published_index

        if top_k < 1:
            raise ValueError(f"--top-k must be at least 1, got {top_k}")
        if template is not None and template not in TEMPLATES:
            raise ValueError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")
        self.rt, self.top_k = rt, top_k
        with rt.sessions() as s:
            iv = require_published_index(session=s)
            self.index_version_id, path, sha = iv.id, iv.path, iv.sha256
            built_at = iv.created_at
            model_id = iv.model_version_id
        self.model: ModelRef = resolve_model(rt.sessions, str(model_id))
        self.model.crop.check(faces, self.model.name)
        # None: the model version's own (what calibration and evaluation used)
        self.template: str = template or self.model.scoring.template
        self.index = VectorIndex.load(path, expected_sha256=sha, expected_dim=self.model.dim)
        self.encoder: LoadedEncoder = rt.encoders.get(self.model)
        self.forward = Forward(self.encoder)  # prepared once, shared by every batch
        self.search_k = search_k or max(50, 10 * top_k)
        t = resolve_threshold(rt, self.model, threshold)
        self.threshold, self.threshold_source = t.value, t.source
        self.threshold_gallery: int | None = t.gallery_identities
        # Read-only look-ups: autocommit, so no BEGIN / ROLLBACK round trips around them.
        self.lookups: sessionmaker[Session] = sessionmaker(
            rt.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        with self.lookups() as s:
            self.owners = Owners.load(s)
        # template "mean": the identities' templates, read as searches need them or all at once
        self.means = MeanTemplates(
            rt,
            self.model,
            self.owners,
            self.lookups,
            encoder=self.encoder,
            built_at=built_at,
        )

    def refresh_removals(self) -> int:
        """Stop answering identities removed in SQL since the load; the number removed now."""
        with self.lookups() as s:
            return self.owners.refresh(s)

    def embed_paths(self, paths: Sequence[Path | str]) -> Encoded:
        """One vector per probe: the whole image, or (detect mode) its largest usable face;
        a probe without one is an error by key."""
        if not self.model.crop.detect:
            return encode_paths(self.encoder, paths, self.rt.limits, spec=self.model.crop)
        from pipelines.services.detection import detect_paths

        found = detect_paths(paths, self.rt.limits)
        enc = encode_paths(
            self.encoder, paths, self.rt.limits, spec=self.model.crop, faces=[f.face for f in found]
        )
        for i, f in enumerate(found):
            if f.face is None:
                enc.errors[i] = Refusal(f.outcome, f.detail or "")
        return enc

    def search(
        self, vectors: np.ndarray, top_k: int | np.ndarray | None = None
    ) -> list[list[Candidate]]:
        """Candidates per probe vector: the ``top_k`` identities (one for all, or per row;
        default the identifier's), owners from memory (:class:`Owners`), no SQL."""
        k = min(self.search_k, max(self.index.ntotal, 1))
        dist, ids = self.index.search(vectors, k)
        hits = self.owners.group(dist, ids, self.top_k if top_k is None else top_k)
        owners, names = self.owners.identity_ids, self.owners.names
        out = [
            [
                Candidate(names[h.slot], h.distance, int(owners[h.slot]), h.face_image_id)
                for h in row
            ]
            for row in hits
        ]
        if self.template != "mean":
            return out
        name_of = {c.identity_id: c.identity for row in out for c in row}
        grouped = [[(c.identity_id, c.distance, c.face_image_id) for c in row] for row in out]
        grouped = self.means.rescore(vectors, grouped)
        return [[Candidate(name_of[g], d, g, f) for g, d, f in row] for row in grouped]

    def load_mean_templates(self, previous: Identifier | None = None) -> int:
        """Every enrolled identity's mean template now (template ``mean``; the number held),
        keeping ``previous``' of identities that did not change: the HTTP service loads them
        before it serves a version, so no search waits for one."""
        if self.template != "mean":
            return 0
        return self.means.load_all(previous.means if previous is not None else None)

    def decide(
        self, probe: str, candidates: list[Candidate], face: Face | None = None, rank: int = 0
    ) -> Decision:
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
            box=_box(face),
            face=None if face is None else rank,
            threshold_gallery=self.threshold_gallery,
        )

    def failed(
        self,
        probe: str,
        error: str,
        decision: str = "error",
        face: Face | None = None,
        rank: int | None = None,
    ) -> Decision:
        return Decision(
            probe,
            decision,
            None,
            None,
            self.threshold,
            self.threshold_source,
            self.model.name,
            self.index_version_id,
            error=error,
            box=_box(face),
            face=rank,
            threshold_gallery=self.threshold_gallery,
        )

    def prepare(self, image: Image.Image, probe: str) -> Prepared:
        """A decoded probe -> its chips, ready for the encoder, and the faces that get none.

        Whole-image model: one chip, the whole image. Detect mode: one chip per face large
        enough to align, largest first; the others are reported ``too_small``, a photo without
        any ``no_face``.
        """
        from faces.face import is_too_small
        from pipelines.services.crops import crop
        from siamese.data import preprocess

        cfg, spec = self.encoder.config, self.model.crop
        if not spec.detect:
            return Prepared(probe, [preprocess(crop(image, None, spec), cfg)], [Slot(chip=0)])
        from pipelines.services.detection import detect_photo

        found = detect_photo(image)
        if not found.faces:
            return Prepared(probe, [], [Slot(error="no face found in the photo", kind="no_face")])
        chips, slots = [], []
        for rank, face in enumerate(found.faces):
            if is_too_small(face):
                why = f"eyes {face.eye_span:.0f} px apart: too small to align"
                slots.append(Slot(face=face, rank=rank, error=why, kind="too_small"))
            else:
                slots.append(Slot(chip=len(chips), face=face, rank=rank))
                chips.append(preprocess(crop(image, face, spec), cfg))
        return Prepared(probe, chips, slots)

    def answer(self, prepared: Prepared, candidates: Sequence[list[Candidate]]) -> list[Decision]:
        """The decisions of a prepared probe, given the candidates of each of its chips."""
        out = []
        for slot in prepared.slots:
            if slot.chip is None:
                out.append(
                    self.failed(prepared.probe, slot.error or "", slot.kind, slot.face, slot.rank)
                )
            else:
                out.append(
                    self.decide(prepared.probe, candidates[slot.chip], slot.face, slot.rank or 0)
                )
        return out

    def identify(self, paths: Sequence[Path], batch_size: int = 64) -> list[Decision]:
        """Decisions in probe order: one per probe (whole-image model) or one per face in it,
        largest first (detect mode); unreadable probes get ``decision="error"``.

        Each file is read and decoded once; the chips of ``batch_size`` probes go through
        the encoder and the index together.
        """
        from pipelines.services.encoding import encode_tensors
        from siamese.images import ImageRejected, decode_file

        out: list[Decision] = []
        for lo in range(0, len(paths), batch_size):
            prepared: list[Prepared] = []
            for p in paths[lo : lo + batch_size]:
                try:
                    image = decode_file(Path(p), limits=self.rt.limits).image
                except ImageRejected as rej:
                    prepared.append(
                        Prepared(str(p), [], [Slot(error=f"{rej.reason}: {rej.detail}")])
                    )
                    continue
                prepared.append(self.prepare(image, str(p)))
            chips = [c for pr in prepared for c in pr.chips]
            found = self.search(encode_tensors(self.forward, chips)) if chips else []
            at = 0
            for pr in prepared:
                out.extend(self.answer(pr, found[at : at + len(pr.chips)]))
                at += len(pr.chips)
        return out


@dataclass
class Slot:
    """What becomes of one entry of a probe's answer: its chip's candidates, or a failure."""

    chip: int | None = None
    face: Face | None = None
    rank: int | None = None
    error: str | None = None
    kind: str = "error"


@dataclass
class Prepared:
    """A decoded probe ready to embed: ``chips`` (preprocessed ``[C, H, W]`` tensors) and one
    :class:`Slot` per entry of its answer."""

    probe: str
    chips: list[Any]
    slots: list[Slot]


def _box(face: Face | None) -> list[float] | None:
    return None if face is None else [round(float(v), 1) for v in face.box]
