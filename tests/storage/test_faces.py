"""Face detections per image and detector version, on a database the migrations made."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.faces import (
    Detection,
    StoredFace,
    add_detection,
    chosen_faces,
    delete_detections,
    detections_of,
    images_to_detect,
)
from storage.identities import get_or_create_identity, remove_identity
from storage.images import ImageRecord, add_image
from storage.models import DetectedFace, FaceDetection, FaceImage

HOG = "dlib-hog"


@pytest.fixture
def images(engine: Engine) -> dict[str, int]:
    """Ada's two accepted images, Bob's one, Bob's one rejected: name -> face_image_id."""
    out: dict[str, int] = {}
    with Session(engine) as s, s.begin():
        ada, _ = get_or_create_identity(session=s, name="Ada")
        bob, _ = get_or_create_identity(session=s, name="Bob")
        for name, ident, sha in [
            ("ada1", ada.id, "a1"),
            ("ada2", ada.id, "a2"),
            ("bob1", bob.id, "b1"),
        ]:
            record = ImageRecord(source_uri=f"{name}.jpg", sha256=sha * 32, identity_id=ident)
            out[name] = add_image(session=s, record=record).id
        rejected = ImageRecord(
            source_uri="bob-bad.jpg", sha256=None, identity_id=bob.id, reject_reason="unreadable"
        )
        out["bob-bad"] = add_image(session=s, record=rejected).id
    return out


def _face(rank: int, *, chosen: bool = False, shift: float = 0.0) -> StoredFace:
    # Awkward binary fractions: they must come back bit for bit.
    landmarks = np.array([[10.1, 20.2], [30.3, 20.4], [70.7, 20.6], [50.5, 20.8], [40.4, 60.6]])
    return StoredFace(
        rank=rank,
        box=(0.1 + shift, 0.2 + shift, 100.3 + shift, 120.7 + shift),
        landmarks=landmarks + shift,
        score=np.float64(1.0 / 3.0),
        eye_span=60.6,
        chosen=chosen,
    )


def _pending(s: Session, version: str, detector: str = HOG) -> set[int]:
    return {
        i for i, _, _ in images_to_detect(session=s, detector=detector, detector_version=version)
    }


def _face_rows(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(DetectedFace)) or 0)


def test_pending_images_shrink_and_a_new_version_sees_them_all(
    engine: Engine, images: dict[str, int]
) -> None:
    accepted = {images["ada1"], images["ada2"], images["bob1"]}
    with Session(engine) as s, s.begin():
        rows = images_to_detect(session=s, detector=HOG, detector_version="v1")
        assert rows == [
            (images["ada1"], "ada1.jpg", "a1" * 32),
            (images["ada2"], "ada2.jpg", "a2" * 32),
            (images["bob1"], "bob1.jpg", "b1" * 32),
        ]
        add_detection(
            session=s,
            face_image_id=images["ada1"],
            detector=HOG,
            detector_version="v1",
            outcome="ok",
            faces=[_face(0, chosen=True)],
        )
        assert _pending(s, "v1") == accepted - {images["ada1"]}
        add_detection(
            session=s,
            face_image_id=images["ada2"],
            detector=HOG,
            detector_version="v1",
            outcome="no_face",
            faces=[],
        )
        add_detection(
            session=s,
            face_image_id=images["bob1"],
            detector=HOG,
            detector_version="v1",
            outcome="error",
            faces=[],
            detail="truncated JPEG",
        )
        assert _pending(s, "v1") == set()
        assert _pending(s, "v2") == accepted
        assert _pending(s, "v1", detector="retinaface") == accepted


def test_detections_round_trip(engine: Engine, images: dict[str, int]) -> None:
    faces = [_face(1, shift=5.0), _face(0, chosen=True), _face(2, shift=-3.0)]
    with Session(engine) as s, s.begin():
        det_id = add_detection(
            session=s,
            face_image_id=images["ada1"],
            detector=HOG,
            detector_version="v1",
            outcome="multiple_faces",
            faces=faces,
            detail="3 faces",
        )
        assert isinstance(det_id, int)
        add_detection(
            session=s,
            face_image_id=images["bob1"],
            detector=HOG,
            detector_version="v1",
            outcome="no_face",
            faces=[],
        )
        add_detection(
            session=s,
            face_image_id=images["ada2"],
            detector=HOG,
            detector_version="v2",
            outcome="too_small",
            faces=[_face(0)],
        )
    with Session(engine) as s, s.begin():
        got = detections_of(
            session=s,
            face_image_ids=[images["ada1"], images["ada2"], images["bob1"], 99999],
            detector=HOG,
            detector_version="v1",
        )
    assert set(got) == {images["ada1"], images["bob1"]}
    ada1 = got[images["ada1"]]
    assert ada1 == Detection(
        images["ada1"], "multiple_faces", sorted(faces, key=lambda f: f.rank), "3 faces"
    )
    assert [f.rank for f in ada1.faces] == [0, 1, 2]
    assert ada1.chosen == _face(0, chosen=True)
    assert ada1.faces[1].landmarks == (np.array(_face(0).landmarks) + 5.0).tolist()
    assert type(ada1.faces[0].score) is float and ada1.faces[0].score == 1.0 / 3.0
    assert got[images["bob1"]] == Detection(images["bob1"], "no_face", [], None)
    assert got[images["bob1"]].chosen is None
    with Session(engine) as s, s.begin():
        assert (
            detections_of(session=s, face_image_ids=[], detector=HOG, detector_version="v1") == {}
        )
        row = s.scalars(select(FaceDetection).where(FaceDetection.id == det_id)).one()
        assert (row.faces, row.outcome, row.detector, row.detector_version) == (
            3,
            "multiple_faces",
            HOG,
            "v1",
        )


def test_chosen_faces_and_counts(engine: Engine, images: dict[str, int]) -> None:
    with Session(engine) as s, s.begin():
        add_detection(
            session=s,
            face_image_id=images["ada1"],
            detector=HOG,
            detector_version="v1",
            outcome="ok",
            faces=[_face(0, chosen=True)],
        )
        add_detection(
            session=s,
            face_image_id=images["ada2"],
            detector=HOG,
            detector_version="v1",
            outcome="multiple_faces",
            faces=[_face(0), _face(1, chosen=True, shift=2.0)],
        )
        add_detection(
            session=s,
            face_image_id=images["bob1"],
            detector=HOG,
            detector_version="v1",
            outcome="too_small",
            faces=[_face(0)],
        )
        add_detection(
            session=s,
            face_image_id=images["bob1"],
            detector=HOG,
            detector_version="v2",
            outcome="ok",
            faces=[_face(0, chosen=True)],
        )

        chosen = chosen_faces(session=s, detector=HOG, detector_version="v1")
        assert chosen == {
            images["ada1"]: _face(0, chosen=True),
            images["ada2"]: _face(1, chosen=True, shift=2.0),
        }
        narrowed = chosen_faces(
            session=s, detector=HOG, detector_version="v1", face_image_ids=[images["ada2"]]
        )
        assert narrowed == {images["ada2"]: _face(1, chosen=True, shift=2.0)}
        assert chosen_faces(session=s, detector=HOG, detector_version="v2") == {
            images["bob1"]: _face(0, chosen=True)
        }
        assert chosen_faces(session=s, detector=HOG, detector_version="v3") == {}


def test_delete_detections_by_version_or_all(engine: Engine, images: dict[str, int]) -> None:
    with Session(engine) as s, s.begin():
        for version in ("v1", "v2"):
            for name in ("ada1", "ada2"):
                add_detection(
                    session=s,
                    face_image_id=images[name],
                    detector=HOG,
                    detector_version=version,
                    outcome="multiple_faces",
                    faces=[_face(0, chosen=True), _face(1)],
                )
        add_detection(
            session=s,
            face_image_id=images["ada1"],
            detector="other",
            detector_version="v1",
            outcome="ok",
            faces=[_face(0, chosen=True)],
        )
    with Session(engine) as s, s.begin():
        assert _face_rows(s) == 9
        assert delete_detections(session=s, detector=HOG, detector_version="v1") == 2
        assert _face_rows(s) == 5
        assert _pending(s, "v1") == {images["ada1"], images["ada2"], images["bob1"]}
        assert _pending(s, "v2") == {images["bob1"]}
    with Session(engine) as s, s.begin():
        assert delete_detections(session=s, detector=HOG) == 2
        assert _face_rows(s) == 1
        assert delete_detections(session=s, detector=HOG) == 0
        assert _pending(s, "v1", detector="other") == {images["ada2"], images["bob1"]}


def test_constraints_raise_integrity_error(engine: Engine, images: dict[str, int]) -> None:
    kwargs = dict(face_image_id=images["ada1"], detector=HOG, detector_version="v1")
    with Session(engine) as s, s.begin():
        det_id = add_detection(session=s, outcome="ok", faces=[_face(0, chosen=True)], **kwargs)

        with pytest.raises(IntegrityError), s.begin_nested():
            add_detection(session=s, outcome="no_face", faces=[], **kwargs)
        with pytest.raises(IntegrityError), s.begin_nested():
            add_detection(
                session=s,
                face_image_id=images["ada2"],
                detector=HOG,
                detector_version="v1",
                outcome="multiple_faces",
                faces=[_face(0), _face(0, shift=1.0)],
            )
        # What add_detection refuses up front, the schema refuses too.
        with pytest.raises(IntegrityError), s.begin_nested():
            s.add(_row(det_id, rank=1, chosen=True))
            s.flush()
        with pytest.raises(IntegrityError), s.begin_nested():
            s.add(
                FaceDetection(
                    face_image_id=images["ada2"],
                    detector=HOG,
                    detector_version="v1",
                    outcome="maybe",
                    faces=0,
                )
            )
            s.flush()
        with pytest.raises(IntegrityError), s.begin_nested():
            add_detection(
                session=s,
                face_image_id=123456,
                detector=HOG,
                detector_version="v1",
                outcome="no_face",
                faces=[],
            )
        # A second unchosen face is fine.
        s.add(_row(det_id, rank=1, chosen=False))
        s.flush()
        assert _face_rows(s) == 2


def _row(detection_id: int, *, rank: int, chosen: bool) -> DetectedFace:
    f = _face(rank)
    return DetectedFace(
        detection_id=detection_id,
        rank=rank,
        box_left=f.box[0],
        box_top=f.box[1],
        box_right=f.box[2],
        box_bottom=f.box[3],
        landmarks=f.landmarks,
        score=f.score,
        eye_span=f.eye_span,
        chosen=chosen,
    )


def test_add_detection_refuses_bad_input(engine: Engine, images: dict[str, int]) -> None:
    kwargs = dict(face_image_id=images["ada1"], detector=HOG, detector_version="v1")
    with Session(engine) as s, s.begin():
        with pytest.raises(ValueError, match="unknown detection outcome"):
            add_detection(session=s, outcome="maybe", faces=[], **kwargs)
        with pytest.raises(ValueError, match="at most one face is chosen"):
            add_detection(
                session=s,
                outcome="multiple_faces",
                faces=[_face(0, chosen=True), _face(1, chosen=True)],
                **kwargs,
            )
        assert _pending(s, "v1") == {images["ada1"], images["ada2"], images["bob1"]}
    with pytest.raises(ValueError, match="5 \\[x, y\\] landmarks"):
        StoredFace(0, (0, 0, 1, 1), [[0.0, 0.0]] * 4, 1.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        StoredFace(0, (0, 0, float("nan"), 1), [[0.0, 0.0]] * 5, 1.0, 1.0)
    with pytest.raises(ValueError, match="rank"):
        StoredFace(-1, (0, 0, 1, 1), [[0.0, 0.0]] * 5, 1.0, 1.0)


def test_deleting_images_or_identities_leaves_no_orphans(
    engine: Engine, images: dict[str, int]
) -> None:
    with Session(engine) as s, s.begin():
        for name in ("ada1", "ada2", "bob1"):
            for version in ("v1", "v2"):
                add_detection(
                    session=s,
                    face_image_id=images[name],
                    detector=HOG,
                    detector_version=version,
                    outcome="multiple_faces",
                    faces=[_face(0, chosen=True), _face(1)],
                )
    with Session(engine) as s, s.begin():
        s.execute(delete(FaceImage).where(FaceImage.id == images["bob1"]))
    with Session(engine) as s, s.begin():
        left = set(s.scalars(select(FaceDetection.face_image_id)))
        assert left == {images["ada1"], images["ada2"]}
        assert _face_rows(s) == 8
    with Session(engine) as s, s.begin():
        removed = remove_identity(session=s, name="Ada")
        assert sorted(removed) == sorted([images["ada1"], images["ada2"]])
    with Session(engine) as s, s.begin():
        assert s.scalar(select(func.count()).select_from(FaceDetection)) == 0
        assert _face_rows(s) == 0
