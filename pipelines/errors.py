"""Errors the pipelines raise for things a user can fix; the CLI shows them as one line."""


class SiamidError(Exception):
    """Base class: the message says what went wrong and what to do."""


class TrainingDataError(SiamidError):
    """The data cannot train a model (empty, one image per person, too few people)."""


class ModelError(SiamidError):
    """No usable trained model (none trained, checkpoint missing or altered)."""
