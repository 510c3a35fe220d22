"""API keys of the HTTP API: created once (the token is shown then only), checked, revoked.

A token looks like ``siamid_<8 hex>_<43 url-safe chars>``. Its head ``siamid_<8 hex>`` is the
public prefix that finds the row and is shown in lists; the database keeps only the sha256 of
the whole token, compared in constant time. A token is 256 random bits, so a plain (unsalted,
fast) hash is enough: there is nothing to guess from a leaked digest.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipelines.services.errors import SiamidError
from storage.models import API_KEY_SCOPES, ApiKey

logger = logging.getLogger(__name__)

TOKEN_HEAD = "siamid_"
PREFIX_LENGTH = len(TOKEN_HEAD) + 8  # "siamid_" + 8 hex digits
SCOPES = API_KEY_SCOPES  # ("read", "write"): write implies read


class ApiKeyError(SiamidError):
    """An API key operation a user asked for that cannot be done (unknown id, bad scope)."""


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never its token or digest."""

    id: int
    prefix: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyInfo:
        revoked = _utc(row.revoked_at) if row.revoked_at is not None else None
        return cls(row.id, row.prefix, row.scope, _utc(row.created_at), revoked)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prefix": self.prefix,
            "scope": self.scope,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True)
class NewApiKey:
    """A key just created: ``token`` exists here and nowhere else."""

    info: ApiKeyInfo
    token: str


def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; siamid stores UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def allows(granted: str, needed: str) -> bool:
    """Whether a key of scope ``granted`` may do what needs ``needed`` (write implies read)."""
    return SCOPES.index(granted) >= SCOPES.index(needed)


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ApiKeyError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    return scope


def create_api_key(sessions: sessionmaker[Session], scope: str) -> NewApiKey:
    """A new key of ``scope``; the returned token is the only copy that will ever exist."""
    from storage.apikeys import add_api_key

    check_scope(scope)
    prefix = TOKEN_HEAD + secrets.token_hex(4)
    token = f"{prefix}_{secrets.token_urlsafe(32)}"
    with sessions.begin() as s:
        row = add_api_key(session=s, prefix=prefix, digest=digest(token), scope=scope)
        info = ApiKeyInfo.of(row)
    logger.info("created API key %d (%s, scope %s)", info.id, info.prefix, info.scope)
    return NewApiKey(info, token)


def list_api_keys(sessions: sessionmaker[Session]) -> list[ApiKeyInfo]:
    from storage.apikeys import list_api_keys as _list

    with sessions() as s:
        return [ApiKeyInfo.of(row) for row in _list(session=s)]


def revoke_api_key(sessions: sessionmaker[Session], key_id: int) -> ApiKeyInfo:
    """Revoke a key by id; revoking a revoked key keeps its first revocation time."""
    from storage.apikeys import get_api_key
    from storage.apikeys import revoke_api_key as _revoke

    with sessions.begin() as s:
        row = get_api_key(session=s, key_id=key_id)
        if row is None:
            raise ApiKeyError(f"no API key with id {key_id}; `siamid apikey list` shows them")
        info = ApiKeyInfo.of(_revoke(session=s, key=row))
    logger.info("revoked API key %d (%s)", info.id, info.prefix)
    return info


def authenticate(sessions: sessionmaker[Session], token: str) -> ApiKeyInfo | None:
    """The key this token belongs to (check ``active``: it may be revoked), or None."""
    from storage.apikeys import find_api_key

    if not token.startswith(TOKEN_HEAD) or len(token) <= PREFIX_LENGTH + 1:
        return None
    with sessions() as s:
        row = find_api_key(session=s, prefix=token[:PREFIX_LENGTH])
        if row is None:
            return None
        # Constant time: the comparison does not reveal how much of the digest matched.
        if not hmac.compare_digest(row.hash, digest(token)):
            return None
        return ApiKeyInfo.of(row)


class ApiKeyCache:
    """Keys that authenticated recently, by token digest, for ``ttl`` seconds.

    A server checks the key of every request; the cache spares it the SQL round trip (and a
    worker-thread hop) for a key seen less than ``ttl`` ago, so a revocation takes effect
    within ``ttl`` seconds. Only keys that authenticated are kept (unknown tokens always go to
    SQL), at most ``capacity`` of them. ``ttl = 0`` turns the cache off.
    """

    def __init__(self, ttl: float, capacity: int = 4096) -> None:
        if ttl < 0 or capacity < 1:
            raise ValueError(f"ttl must be >= 0 and capacity >= 1, got {ttl}, {capacity}")
        self.ttl, self.capacity = ttl, capacity
        self._keys: dict[str, tuple[float, ApiKeyInfo]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> ApiKeyInfo | None:
        if self.ttl == 0:
            return None
        hit = self._keys.get(digest(token))
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, token: str, key: ApiKeyInfo) -> None:
        if self.ttl == 0 or not key.active:
            return
        with self._lock:
            if len(self._keys) >= self.capacity:
                now = time.monotonic()
                self._keys = {d: v for d, v in self._keys.items() if v[0] >= now}
                if len(self._keys) >= self.capacity:
                    self._keys.clear()
            self._keys[digest(token)] = (time.monotonic() + self.ttl, key)
