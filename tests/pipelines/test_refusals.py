"""Per-image errors are typed values (reason, detail), made where they arise and written as
``reason: detail`` only at the edges."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from pipelines.services.encoding import FaceFiles
from pipelines.services.refusals import NO_FACE, REASONS, Refusal
from siamese.config import EncoderConfig
from siamese.images import REJECT_REASONS, DecodeLimits
from storage.models import DETECTION_OUTCOMES


def test_one_list_of_reasons_and_their_text() -> None:
    assert set(REJECT_REASONS) | set(DETECTION_OUTCOMES) | {"changed"} == set(REASONS)
    assert str(Refusal("missing", "a.jpg does not exist")) == "missing: a.jpg does not exist"
    assert str(Refusal("no_face")) == "no_face"
    assert NO_FACE.explanation == REASONS["no_face"]
    with pytest.raises(ValueError, match="unknown refusal reason 'nope'"):
        Refusal("nope", "")


def test_face_files_say_why_with_a_refusal(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("L", (40, 40), 128).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    sha = hashlib.sha256(good.read_bytes()).hexdigest()
    items = [
        (0, str(good), sha),
        (1, str(tmp_path / "gone.png"), None),
        (2, str(broken), None),
        (3, str(good), "0" * 64),
    ]
    files = FaceFiles(items, EncoderConfig(), DecodeLimits())
    found = [files.load(i)[1] for i in range(len(items))]
    assert found[0] is None
    assert [r.reason for r in found[1:] if r is not None] == ["missing", "not_an_image", "changed"]
    assert str(found[1]) == f"missing: {tmp_path / 'gone.png'} does not exist"
