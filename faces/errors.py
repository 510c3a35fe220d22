"""The errors a caller of ``faces`` can cause, each with a message that says what to do.

They derive from the built-in exception that fits (``ValueError``, ``FileNotFoundError``) so
that code which does not know this package still catches them sensibly; ``FacesError`` is the
common base for callers that want to catch everything this package raises on purpose.
"""

from __future__ import annotations


class FacesError(Exception):
    """Base of the errors raised on purpose by the ``faces`` package."""


class ImageFormatError(FacesError, ValueError):
    """An image the detector or the aligner cannot take as it is (dtype, shape, size)."""


class ModelFileError(FacesError, FileNotFoundError):
    """A model file that is missing or is not the kind of dlib model that was expected."""


class LandmarksError(FacesError, ValueError):
    """Landmarks or a serialised face that do not have the expected shape or values."""
