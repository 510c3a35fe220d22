"""Errors as HTTP answers: what a client can cause is 4xx with ``{"detail": reason}``.

The one list of user errors (:func:`pipelines.services.errors.user_errors`) is mapped here to status
codes; what is not in it is a bug: 500 with a generic reason, the traceback in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from index.errors import DimensionMismatchError, InvalidInputError, VectorIndexError
from pipelines.api.jobs import UnknownJobError
from pipelines.api.live import NotReadyError
from pipelines.services.errors import GalleryError, user_errors
from siamese.images import ImageRejected
from storage.identities import UnknownIdentityError
from storage.indexes import NoPublishedIndexError
from storage.registry import UnknownModelVersionError

logger = logging.getLogger(__name__)

#: First match wins; other user errors are 400. "Not ready" is the server's state, not the
#: client's doing: 503, which tells a client (and a load balancer) to come back.
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (UnknownIdentityError, 404),
    (UnknownModelVersionError, 404),
    (UnknownJobError, 404),
    (ImageRejected, 422),
    (DimensionMismatchError, 422),  # an embedding that is not of the model's size
    (InvalidInputError, 422),
    (GalleryError, 422),
    (NotReadyError, 503),
    (NoPublishedIndexError, 503),
    (VectorIndexError, 503),  # the index file itself is damaged or missing: an operator's job
)


def status_of(exc: BaseException) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 400)


def message_of(exc: BaseException) -> str:
    """The error's own sentence (``str`` of a LookupError would add quotes around it)."""
    if isinstance(exc, LookupError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def install(app: FastAPI, on_rejected_image: Any = None) -> None:
    async def user_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ImageRejected) and on_rejected_image is not None:
            on_rejected_image(exc.reason)
        headers = {"Retry-After": "1"} if status_of(exc) == 503 else None
        return JSONResponse({"detail": message_of(exc)}, status_of(exc), headers=headers)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in errors
        )
        return JSONResponse({"detail": reasons or "invalid request", "errors": _plain(errors)}, 422)

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, 500)

    for cls in (*user_errors(), NotReadyError):
        app.add_exception_handler(cls, user_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, bug)


def _plain(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the raw input (an uploaded file or a long vector)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
