"""Small JPEG copies of gallery photos for the console, cached by content address.

A thumbnail's name is ``<sha256>-<size>[-face].jpg`` under ``SIAMID_HOME/cache/thumbs``: the
photo's digest and the asked size, nothing a client chose. The photo is decoded with the
project's limits (a bomb is refused here as at enrolment); ``face`` crops around the enrolled
face (detect-mode galleries) with a margin, else the whole photo is scaled.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from PIL import Image

from pipelines.services.runtime import Runtime
from siamese.images import DecodeLimits, decode_bytes

#: The sizes the pages ask for (longest side, pixels): list faces, candidates, a person's photos.
SIZES = (96, 160, 480)
FACE_MARGIN = 0.3  # of the box's side, around the face


def thumbs_dir(rt: Runtime) -> Path:
    return rt.settings.home_dir / "cache" / "thumbs"


def render(
    data: bytes, size: int, box: tuple[float, float, float, float] | None, limits: DecodeLimits
) -> bytes:
    image = decode_bytes(data, limits=limits, name="photo").image.convert("RGB")
    if box is not None:
        left, top, right, bottom = box
        pad = FACE_MARGIN * max(right - left, bottom - top)
        image = image.crop(
            (
                max(0, int(left - pad)),
                max(0, int(top - pad)),
                min(image.width, int(right + pad)),
                min(image.height, int(bottom + pad)),
            )
        )
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def thumbnail(
    rt: Runtime,
    sha256: str,
    source: Path,
    size: int,
    box: tuple[float, float, float, float] | None = None,
) -> Path:
    """The cached thumbnail of the photo at ``source`` (made on first use)."""
    if size not in SIZES:
        raise ValueError(f"thumbnail size must be one of {SIZES}, got {size}")
    path = thumbs_dir(rt) / sha256[:2] / f"{sha256}-{size}{'-face' if box else ''}.jpg"
    if path.is_file():
        return path
    data = render(source.read_bytes(), size, box, rt.limits)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".thumb-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path


def forget(rt: Runtime, digests: list[str]) -> int:
    """Delete the cached thumbnails of these photos (after a removal); how many files."""
    gone = 0
    for sha in digests:
        for path in (thumbs_dir(rt) / sha[:2]).glob(f"{sha}-*.jpg"):
            path.unlink(missing_ok=True)
            gone += 1
    return gone
