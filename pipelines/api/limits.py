"""The request body limit, enforced while the body arrives (before any of it is parsed).

A declared ``Content-Length`` over the limit is refused at once; a body without one (chunked)
is counted as it streams in and refused as soon as it passes the limit. Either way the client
gets 413 with the limit in the reason, and the server never holds more than the limit.
"""

from __future__ import annotations

from fastapi import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes; send smaller images or fewer at "
            "once (SIAMID_API_MAX_UPLOAD_BYTES, SIAMID_API_MAX_FILES)",
        )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = BodyTooLarge(self.max_bytes)
            await JSONResponse({"detail": error.detail}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the app's body read: FastAPI passes HTTPExceptions through.
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


def read_upload(upload: UploadFile, max_bytes: int, label: str) -> bytes:
    """The file's bytes, at most ``max_bytes`` of them: 413 naming the file beyond that."""
    return _within(upload.file.read(max_bytes + 1), max_bytes, label)


async def read_upload_async(upload: UploadFile, max_bytes: int, label: str) -> bytes:
    """:func:`read_upload` for ``async`` routes."""
    return _within(await upload.read(max_bytes + 1), max_bytes, label)


def _within(data: bytes, max_bytes: int, label: str) -> bytes:
    if len(data) > max_bytes:
        raise HTTPException(
            413, f"{label} is larger than {max_bytes} bytes (SIAMID_API_MAX_UPLOAD_BYTES)"
        )
    return data
