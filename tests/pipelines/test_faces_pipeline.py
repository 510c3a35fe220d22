"""The face stage through the services: detection at import, policies, a detect-mode model that
trains, embeds and identifies on aligned crops, one answer per face, and mode mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.services.crops import CropModeError, CropSpec
from pipelines.services.detection import classify
from pipelines.services.detection_chunks import detect_gallery
from pipelines.services.gallery import import_items, scan_image_folder
from pipelines.services.identification import Identifier
from pipelines.services.indexing import index_pending
from pipelines.services.runtime import Runtime
from pipelines.services.training import (
    TrainOptions,
    training_set,
)
from tests.support import ATT_FACES, need_dir, quick_model

ATT = ATT_FACES


def _att(subject: int, index: int) -> Image.Image:
    return Image.open(need_dir(ATT) / f"s{subject}" / f"{index}.pgm").convert("RGB")


def _scene(faces: list[tuple[Image.Image, int, int]], seed: int) -> Image.Image:
    """A 360x260 photo with the given faces pasted (scaled 1.6x) at (x, y)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(90, 160, size=(260, 360, 3), dtype=np.uint8)
    photo = Image.fromarray(base)
    for face, x, y in faces:
        photo.paste(face.resize((147, 179), Image.Resampling.BILINEAR), (x, y))
    return photo


@pytest.fixture
def photo_gallery(tmp_path: Path) -> Path:
    """6 people x 4 photos, a photo with no face and one of two people (persons 1 and 2)."""
    root = tmp_path / "photos"
    for person in range(1, 7):
        folder = root / f"p{person}"
        folder.mkdir(parents=True)
        for i in range(1, 5):
            x, y = 20 + 40 * i, 10 + 10 * (i % 3)
            _scene([(_att(person, i), x, y)], seed=10 * person + i).save(folder / f"{i}.jpg")
    _scene([], seed=99).save(root / "p1" / "empty.jpg")
    two = _scene([(_att(1, 9), 5, 40), (_att(2, 9), 190, 60)], seed=7)
    two.save(root / "p2" / "with-p1.jpg")
    return root


def test_classify_policies() -> None:
    from dataclasses import replace

    from faces.face import Face

    def face(x: float, span: float) -> Face:
        eyes = [[x + span, 50], [x + 0.7 * span, 50], [x, 50], [x + 0.3 * span, 50]]
        pts = np.array([*eyes, [x + span / 2, 80]], dtype=float)
        return Face((x - 10, 20, x + span + 10, 100), pts, 1.0)

    assert classify([]).outcome == "no_face"
    assert classify([face(0, 10)]).outcome == "too_small"
    big, small = face(0, 60), face(200, 40)
    found = classify([small, big])
    assert (found.outcome, found.chosen, found.faces[0]) == ("multiple_faces", 0, big)
    assert classify([small, big], "refuse").face is None
    assert classify([big]).outcome == "ok" and classify([big]).detail is None
    by_cnn = classify([replace(big, found_by="cnn")])
    assert (by_cnn.outcome, by_cnn.chosen, by_cnn.detail) == ("ok", 0, "found by the CNN fallback")
    assert "CNN fallback" in (classify([small, replace(big, found_by="cnn")]).detail or "")


@pytest.mark.slow
def test_detect_mode_model_end_to_end(rt: Runtime, photo_gallery: Path) -> None:
    summary = import_items(scan_image_folder(photo_gallery), sessions=rt.sessions)
    assert summary.new == 26
    found = detect_gallery(rt)
    assert found.detected == 26
    assert found.outcomes["ok"] == 24 and found.outcomes["no_face"] == 1
    assert found.outcomes["multiple_faces"] == 1
    assert detect_gallery(rt).detected == 0  # once per image and detector version

    crop = TrainOptions(faces="detect").crop()
    ts = training_set(rt, None, crop)
    assert len(ts.paths) == 25 and ts.faces is not None and all(ts.faces)
    name = quick_model(rt, members=1, name="detect-model", training=ts, faces="detect")

    run = index_pending(rt, name)
    assert run.model.crop == CropSpec(faces="detect")
    assert run.embedded == 25 and run.index.vectors == 25
    assert [f.refusal.reason for f in run.failed] == ["no_face"]

    ident = Identifier(rt, threshold=10.0, top_k=2)
    decisions = ident.identify(
        [photo_gallery / "p2" / "with-p1.jpg", photo_gallery / "p1" / "empty.jpg"]
    )
    assert [d.decision for d in decisions] == ["match", "match", "no_face"]
    first, second, empty = decisions
    assert (first.face, second.face, empty.box) == (0, 1, None)
    assert first.box is not None and second.box is not None
    assert first.box[0] < 150 < second.box[0]  # p1 on the left, p2 on the right
    json.dumps([d.as_dict() for d in decisions])

    with pytest.raises(CropModeError, match="--faces detect"):
        Identifier(rt, faces="whole")


@pytest.mark.slow
def test_dlib_resnet_zero_shot_and_head_recognise_pasted_people(
    rt: Runtime, photo_gallery: Path
) -> None:
    from pipelines.services.training import train_model

    import_items(scan_image_folder(photo_gallery), sessions=rt.sessions)
    assert TrainOptions(backbone="dlib-resnet").scoring().flip_average  # the default
    zero = TrainOptions(backbone="dlib-resnet", epochs=0, flip_average=False)
    assert zero.crop() == CropSpec.dlib_chips()
    ts = training_set(rt, None, zero.crop())
    trained = train_model(rt, ts, zero)
    assert trained.validation.mode == "zero-shot"
    run = index_pending(rt, trained.name, workers=0)
    assert run.model.architecture == "dlib-resnet" and run.index.vectors == 25

    ident = Identifier(rt, top_k=2)  # the default threshold: dlib's 0.6 (margin 1.2 / 2)
    assert ident.threshold == pytest.approx(0.6)
    probe = photo_gallery.parent / "probe.jpg"  # unseen photos of p3 (left) and p4 (right)
    _scene([(_att(3, 10), 5, 40), (_att(4, 10), 190, 60)], seed=5).save(probe)
    both = sorted(ident.identify([probe]), key=lambda d: d.box[0] if d.box else 0.0)
    assert [(d.decision, d.identity) for d in both] == [("match", "p3"), ("match", "p4")]

    head = train_model(
        rt, ts, TrainOptions(backbone="dlib-resnet", epochs=3, seed=1, flip_average=False)
    )
    v = head.validation
    assert v.mode == "head" and v.zero_shot_eer is not None and v.eer is not None

    # The other training mode: the last stages fine-tuned; the model embeds like any other.
    tuned = train_model(
        rt, ts, TrainOptions(backbone="dlib-resnet", epochs=2, seed=1, tune="last-stages")
    )
    assert tuned.validation.mode == "last-stages" and "last-stages" in tuned.name
    assert tuned.validation.zero_shot_eer == v.zero_shot_eer  # same people held out
    again = index_pending(rt, tuned.name, workers=0)
    assert again.index.vectors == 25

    # Test-time flip: recorded with the model, used wherever it embeds.
    flip = train_model(rt, ts, TrainOptions(backbone="dlib-resnet", epochs=0, flip_average=True))
    assert "zeroshot-flip" in flip.name and flip.validation.flip_average is True
    same_people = trained.validation.genuine_quantiles  # other descriptors, same people
    assert flip.validation.genuine_quantiles != same_people
    index_pending(rt, flip.name, workers=0)
    ident = Identifier(rt, top_k=2)  # the index index_pending published last: the flip model's
    assert ident.model.name == flip.name and ident.encoder.module.flip_average is True
    both = sorted(ident.identify([probe]), key=lambda d: d.box[0] if d.box else 0.0)
    assert [(d.decision, d.identity) for d in both] == [("match", "p3"), ("match", "p4")]
    with pytest.raises(ValueError, match="--flip-average applies to --backbone dlib-resnet"):
        TrainOptions(flip_average=True).configs()
    with pytest.raises(ValueError, match="--tune last-stages"):
        TrainOptions(
            backbone="dlib-resnet", epochs=1, tune="last-stages", flip_average=True
        ).configs()
    with pytest.raises(ValueError, match="--tune applies to --backbone dlib-resnet"):
        TrainOptions(tune="last-stages").configs()
    with pytest.raises(ValueError, match="--distance"):
        TrainOptions(backbone="dlib-resnet", distance="cosine").configs()


@pytest.mark.slow
def test_awkward_photos_end_with_a_face_or_a_reason(rt: Runtime, tmp_path: Path) -> None:
    """CMYK, 16-bit, EXIF-rotated, a 30000 px panorama, a face cut by the border, no face and a
    corrupt file: every photo is kept with a detection outcome; nothing is lost."""
    import io

    root = tmp_path / "awkward" / "p1"
    root.mkdir(parents=True)
    face = _att(1, 1)
    _scene([(face, 100, 40)], seed=1).convert("CMYK").save(root / "cmyk.jpg")
    grey16 = np.asarray(_scene([(face, 60, 30)], seed=2).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(root / "sixteen.png")
    upright = _scene([(face, 80, 50)], seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: the viewer rotates 90 degrees clockwise
    upright.rotate(90, expand=True).save(root / "phone.jpg", exif=exif.tobytes())
    wide = Image.new("RGB", (30000, 600), (120, 120, 120))
    wide.paste(face.resize((184, 224)), (21000, 200))
    wide.save(root / "panorama.png")
    _scene([(face, 280, 120)], seed=4).save(root / "cut.jpg")  # half the face off the edge
    _scene([], seed=5).save(root / "nobody.jpg")
    buf = io.BytesIO()
    _scene([(face, 100, 40)], seed=6).save(buf, format="JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    summary = import_items(scan_image_folder(tmp_path / "awkward"), sessions=rt.sessions)
    assert (summary.new, summary.rejected) == (6, 1)  # the truncated JPEG: rejected at import
    found = detect_gallery(rt)
    assert found.detected == 6 and sum(found.outcomes.values()) == 6
    from pipelines.services.detection import chosen_gallery_faces
    from storage.faces import detections_of
    from storage.images import labelled_images

    with rt.sessions() as s:
        sources = {i: Path(src).name for i, src, _ in labelled_images(session=s)}
        found_by_id = detections_of(
            session=s,
            face_image_ids=list(sources),
            detector=found.detector,
            detector_version=found.version,
        )
    outcomes = {sources[i]: d.outcome for i, d in found_by_id.items()}
    assert outcomes["nobody.jpg"] == "no_face"
    for name in ("cmyk.jpg", "sixteen.png", "phone.jpg", "panorama.png"):
        assert outcomes[name] == "ok", outcomes
    assert outcomes["cut.jpg"] in ("ok", "no_face")
    faces = chosen_gallery_faces(rt)
    panorama = next(f for i, f in faces.items() if sources[i] == "panorama.png")
    assert 20900 < panorama.box[0] < 21100  # found on a reduced copy, mapped back
