"""Who is this: an uploaded photo, or an embedding made by the served model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, UploadFile

from pipelines.api import probes
from pipelines.api.deps import Served, State, require_read
from pipelines.api.limits import read_upload_async
from pipelines.api.schemas import MAX_TOP_K, Answer, FaceAnswer, IdentifyResponse, SearchRequest

router = APIRouter(prefix="/v1", tags=["identification"], dependencies=[Depends(require_read)])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no key, or an unknown or revoked one"},
    503: {"description": "no index loaded yet"},
}


@router.post(
    "/identify",
    response_model=IdentifyResponse,
    responses={
        **ERRORS,
        413: {"description": "the upload is larger than the limit"},
        422: {"description": "not a usable image (the reason says why)"},
    },
)
async def identify(
    state: State,
    ident: Served,
    image: Annotated[UploadFile, File(description="the photo (JPEG, PNG, PGM, BMP, WebP, TIFF)")],
    top_k: Annotated[int | None, Query(ge=1, le=MAX_TOP_K)] = None,
) -> IdentifyResponse:
    """The answer of `siamid identify --json` for the photo, one entry per face.

    For a model of whole images a photo is one probe: one entry with `box` null; for a model
    of detected faces, one entry per face with its `box`.
    """
    label = image.filename or "image"
    data = await read_upload_async(image, state.settings.max_upload_bytes, label)
    view = probes.with_top_k(ident, top_k or ident.top_k)
    decisions = await state.queries.identify_photo(view, data, label)
    return IdentifyResponse(faces=[FaceAnswer.model_validate(d) for d in decisions])


@router.post(
    "/search",
    response_model=Answer,
    responses={**ERRORS, 422: {"description": "not a finite vector of the model's dimension"}},
)
async def search(state: State, ident: Served, body: SearchRequest) -> Answer:
    """The same answer for an embedding computed elsewhere with the served model."""
    view = probes.with_top_k(ident, body.top_k or ident.top_k)
    decision = await state.queries.search_embedding(view, body.embedding)
    return Answer.model_validate(decision)
