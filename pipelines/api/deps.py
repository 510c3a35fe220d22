"""Dependencies of the routes: the process state, the caller's key and scope, the served index."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from pipelines.api.state import ApiState
from pipelines.services.apikeys import ApiKeyInfo, allows, authenticate
from pipelines.services.identification import Identifier

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="A key from `siamid apikey create --scope read|write` (write implies read).",
)


async def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.siamid
    return state


State = Annotated[ApiState, Depends(get_state)]


async def caller(
    state: State, token: Annotated[str | None, Security(api_key_header)]
) -> ApiKeyInfo:
    """The key the request carries: 401 when it is missing, unknown or revoked.

    A key checked in the last ``key_cache_seconds`` is taken from memory, on the event loop;
    otherwise SQL is asked from a worker thread.
    """
    if not token:
        raise HTTPException(
            401, "missing X-API-Key header; create a key with `siamid apikey create --scope read`"
        )
    key = state.keys.get(token)
    if key is None:
        key = await run_in_threadpool(authenticate, state.lookups, token)
        if key is None:
            raise HTTPException(401, "unknown API key; `siamid apikey list` shows the valid ones")
        state.keys.put(token, key)
    if not key.active:
        raise HTTPException(401, f"API key {key.prefix} was revoked; create a new one")
    return key


def require(scope: str) -> Callable[[ApiKeyInfo], Awaitable[ApiKeyInfo]]:
    async def check(key: Annotated[ApiKeyInfo, Depends(caller)]) -> ApiKeyInfo:
        if not allows(key.scope, scope):
            raise HTTPException(
                403, f"API key {key.prefix} has scope {key.scope}; this needs a {scope} key"
            )
        return key

    check.__name__ = f"require_{scope}"
    return check


require_read = require("read")
require_write = require("write")


async def served_identifier(state: State) -> Identifier:
    """The version in service now: the request keeps it to the end, whatever swaps meanwhile."""
    return state.live.current()


Served = Annotated[Identifier, Depends(served_identifier)]

IdentityName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=512,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="the identity's exact name (URL-encoded; any text without control "
        "characters or '/', up to 512 characters)",
    ),
]
