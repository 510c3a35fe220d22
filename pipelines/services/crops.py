"""What the encoder sees of a photo: the whole image, or an aligned crop of one detected face.

A model records its :class:`CropSpec` (``--faces whole|detect``) with its version; training,
embedding, calibration, identification and evaluation all build their inputs through
:func:`crop`, so they read the same crops.

- ``whole``: the image is already a face crop (AT&T, the synthetic demo); it is resized as is.
- ``detect``: the face's five landmarks are mapped by a similarity transform onto a canonical
  template, in a ``size`` crop with ``padding`` around it: AT&T's framing
  (:data:`faces.align.ATT_TEMPLATE`, forehead to chin) for the from-scratch encoders, whose
  defaults were tuned on AT&T, and dlib's chips (:func:`faces.align.dlib_chip`) for its ResNet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from faces.face import Face
from pipelines.services.errors import SiamidError

#: The crop modes a model can be trained with (``--faces``).
FACE_MODES: tuple[str, ...] = ("whole", "detect")
#: How a detected face is cut out: ``align`` (:func:`faces.align.align`, any size) or
#: ``dlib-chip`` (:func:`faces.align.dlib_chip`: the 150x150 chips dlib's ResNet was trained on).
CROP_STYLES: tuple[str, ...] = ("align", "dlib-chip")


class CropModeError(SiamidError):
    """A crop mode asked for that differs from the model's, or that does not exist."""


@dataclass(frozen=True)
class CropSpec:
    """How a photo becomes the encoder's input; stored with the model version."""

    faces: str = "whole"
    size: tuple[int, int] = (92, 112)  # (width, height) of the aligned crop, AT&T's shape
    padding: float = 0.0  # around the template, as a share of its side
    style: str = "align"

    def __post_init__(self) -> None:
        if self.faces not in FACE_MODES:
            raise CropModeError(
                f"--faces must be one of {', '.join(FACE_MODES)}, got {self.faces!r}"
            )
        if self.style not in CROP_STYLES:
            raise CropModeError(f"crop style must be one of {CROP_STYLES}, got {self.style!r}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    @property
    def detect(self) -> bool:
        return self.faces == "detect"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CropSpec:
        """A model's stored spec; models from before the face stage read whole images."""
        if not data:
            return cls()
        size = (int(data["size"][0]), int(data["size"][1]))
        return cls(data["faces"], size, float(data["padding"]), data.get("style", "align"))

    @classmethod
    def dlib_chips(cls, faces: str = "detect") -> CropSpec:
        """dlib's 150x150 chips with padding 0.25 (``get_face_chip_details``)."""
        return cls(faces, (150, 150), 0.25, "dlib-chip")

    def check(self, asked: str | None, model_name: str) -> None:
        """Refuse a ``--faces`` that differs from the model's mode."""
        if asked is not None and asked != self.faces:
            raise CropModeError(
                f"model {model_name} was trained on --faces {self.faces} crops, not {asked}; "
                f"drop --faces or pass --faces {self.faces} (or train a model with --faces {asked})"
            )


def crop(image: Image.Image, face: Face | None, spec: CropSpec) -> Image.Image:
    """The encoder's view of ``image``: whole, or the aligned crop of ``face`` (grey or RGB)."""
    if not spec.detect:
        return image
    if face is None:
        raise ValueError("a detect-mode crop needs a face")
    from faces.align import ATT_TEMPLATE, align, dlib_chip

    if spec.style == "dlib-chip":
        arr = np.asarray(image.convert("RGB"))
        return Image.fromarray(dlib_chip(arr, face, spec.size[0], spec.padding))
    aligned = align(np.asarray(image), face, spec.size, spec.padding, template=ATT_TEMPLATE)
    return Image.fromarray(aligned)
