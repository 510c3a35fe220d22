"""Decoding face images safely: full decode, a pixel bound, EXIF orientation, clear rejections.

Every file a user gives us goes through :func:`decode_image` before it is trusted. A bad file
becomes an :class:`ImageRejected` with a short machine-readable ``reason`` and a human ``detail``;
it never raises anything else, so an import can record it and go on.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".pgm", ".ppm", ".pbm", ".pnm", ".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
)

# Modes we can turn into grey or RGB without guessing a scale (float images are refused).
SUPPORTED_MODES = frozenset(
    {
        "1",
        "L",
        "LA",
        "La",
        "P",
        "PA",
        "RGB",
        "RGBA",
        "RGBa",
        "RGBX",
        "CMYK",
        "YCbCr",
        "I",
        "I;16",
        "I;16L",
        "I;16B",
        "I;16N",
    }
)

# The reasons an image can be rejected, with what the user can do about each.
REJECT_REASONS: dict[str, str] = {
    "missing": "the file does not exist; fix the path or remove it from the manifest",
    "not_a_file": "the path is not a regular file",
    "outside_root": "the path leaves the import root; pass --allow-outside to accept it",
    "unreadable": "the file could not be read (permissions?)",
    "empty": "the file has zero bytes",
    "unsupported_extension": "not an extension siamid reads (PGM, JPEG, PNG, BMP, WebP, TIFF)",
    "not_an_image": "Pillow does not recognise the bytes as an image",
    "truncated": "the image data ends early; re-export or re-download the file",
    "corrupt": "the image data is damaged and cannot be decoded",
    "too_small": "smaller than the minimum side (SIAMID_MIN_IMAGE_SIDE)",
    "too_large": "more pixels than SIAMID_MAX_IMAGE_PIXELS (decompression-bomb guard)",
    "unsupported_mode": "a pixel format siamid does not convert (e.g. floating point)",
    "no_identity": "the manifest row has an empty identity",
}


class ImageRejected(Exception):
    """A file that is not a usable face image; ``reason`` is a key of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REJECT_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodeLimits:
    min_side: int = 16
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        if self.min_side < 1:
            raise ValueError(f"min_side must be >= 1, got {self.min_side}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # upright (EXIF applied), fully loaded, mode "L" or "RGB"
    width: int
    height: int
    source_mode: str  # the file's own mode, before conversion


def decode_bytes(
    data: bytes, *, limits: DecodeLimits = DEFAULT_LIMITS, name: str = ""
) -> DecodedImage:
    """Fully decode ``data``; raise :class:`ImageRejected` for anything unusable."""
    if not data:
        raise ImageRejected("empty", f"{name or 'file'} has zero bytes")
    # Never accept a truncated file silently, whatever another library set globally.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            # Checked from the header, before a single pixel is decoded.
            if width * height > limits.max_pixels:
                raise ImageRejected(
                    "too_large",
                    f"{width}x{height} = {width * height} pixels > limit {limits.max_pixels}",
                )
            if img.mode not in SUPPORTED_MODES:
                raise ImageRejected("unsupported_mode", f"pixel mode {img.mode!r}")
            source_mode = img.mode
            img.load()
            img = ImageOps.exif_transpose(img)
            assert img is not None
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        msg = str(exc) or type(exc).__name__
        reason = "truncated" if "truncat" in msg.lower() or isinstance(exc, EOFError) else "corrupt"
        raise ImageRejected(reason, msg) from None
    width, height = img.size
    if min(width, height) < limits.min_side:
        raise ImageRejected(
            "too_small", f"{width}x{height}, the minimum side is {limits.min_side} pixels"
        )
    return DecodedImage(_to_l_or_rgb(img), width, height, source_mode)


def decode_file(path: Path, *, limits: DecodeLimits = DEFAULT_LIMITS) -> DecodedImage:
    """Read and decode one file; every failure is an :class:`ImageRejected` naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageRejected("missing", f"{path} does not exist") from None
    except IsADirectoryError:
        raise ImageRejected("not_a_file", f"{path} is a directory") from None
    except OSError as exc:
        raise ImageRejected("unreadable", f"{path}: {exc.strerror or exc}") from None
    return decode_bytes(data, limits=limits, name=str(path))


def _to_l_or_rgb(img: Image.Image) -> Image.Image:
    """Grey stays grey; the rest becomes RGB (alpha over black, like the AT&T background)."""
    mode = img.mode
    if mode in ("L", "1"):
        return img.convert("L")
    if mode.startswith("I"):
        # 16/32-bit grey: scale the full range to 8 bits rather than clipping it.
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if mode in ("LA", "La"):
        return _composite(img.convert("RGBA")).convert("L")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa"):
        return _composite(img.convert("RGBA"))
    return img.convert("RGB")


def _composite(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
