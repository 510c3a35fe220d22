"""API keys: rows hold a public prefix and the sha256 of the token. Functions never commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiKey, utcnow


def add_api_key(*, session: Session, prefix: str, digest: str, scope: str) -> ApiKey:
    row = ApiKey(prefix=prefix, hash=digest, scope=scope)
    session.add(row)
    session.flush()
    return row


def find_api_key(*, session: Session, prefix: str) -> ApiKey | None:
    """The key with this public prefix (unique), revoked or not."""
    return session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()


def get_api_key(*, session: Session, key_id: int) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def list_api_keys(*, session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_api_key(*, session: Session, key: ApiKey, when: datetime | None = None) -> ApiKey:
    """Mark the key revoked (once: a second revocation keeps the first time)."""
    if key.revoked_at is None:
        key.revoked_at = when or utcnow()
        session.flush()
    return key
