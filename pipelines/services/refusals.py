"""Why an image gave no vector: a typed value made where the error arises, carried through the
services as it is, and written as text only at the edges (command line, HTTP answers, logs).

:data:`REASONS` is the one list of reasons, each with what it means: the decoder's
(:data:`siamese.images.REJECT_REASONS`), the encoder's own check of the bytes (``changed``),
and what detection found in the photo (:data:`storage.models.DETECTION_OUTCOMES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from siamese.images import REJECT_REASONS
from storage.models import DETECTION_OUTCOMES

if TYPE_CHECKING:
    from siamese.images import ImageRejected

_DETECTION: dict[str, str] = {
    "no_face": "no usable face was detected in the photo",
    "multiple_faces": "the photo shows several people and the model's policy refuses it",
    "too_small": "the largest face is too small to align (its eyes are too close together)",
    "error": "the photo could not be decoded for detection",
    "ok": "a face was found, but none was chosen as the person's",
}
assert set(_DETECTION) == set(DETECTION_OUTCOMES), "a detection outcome lacks its explanation"

#: Every reason an image can be refused, with what it means.
REASONS: dict[str, str] = {
    **REJECT_REASONS,
    "changed": "the file's bytes differ from the imported ones; re-import it",
    **_DETECTION,
}


@dataclass(frozen=True)
class Refusal:
    """One image that gave no vector: ``reason`` (a key of :data:`REASONS`) and a detail that
    names the file or what was found."""

    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown refusal reason {self.reason!r}")

    @classmethod
    def of(cls, rejected: ImageRejected) -> Refusal:
        """The decoder's rejection of a file."""
        return cls(rejected.reason, rejected.detail)

    @property
    def explanation(self) -> str:
        return REASONS[self.reason]

    def __str__(self) -> str:
        """The text form the edges print: ``reason: detail`` (the reason alone without one)."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


#: A photo in detect mode without a usable face to embed.
NO_FACE = Refusal("no_face", "no usable face was detected in this photo")
