"""The console's sign-in session: a signed, expiring cookie that names an API key, never holds it.

The cookie is ``<payload>.<signature>``: the payload (base64url JSON) has the key's id and
prefix, a random session id and the expiry time; the signature is HMAC-SHA256 with the
console's secret. Every request checks the signature and the expiry, then asks SQL whether
the key is still active and what scope it has, so revoking a key ends its sessions at once.

The secret comes from ``SIAMID_API_UI_SECRET`` or a file ``SIAMID_HOME/ui-session.key``
(created once, mode 0600): every worker process of one server, and a restarted server, accept
the same cookies. The CSRF token of a session is an HMAC of its id, so it needs no storage
either; forms carry it in a hidden field, scripts in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

COOKIE = "siamid_session"
COOKIE_PATH = "/ui"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class SessionData:
    key_id: int
    prefix: str
    sid: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(home: Path, configured: str | None = None) -> bytes:
    """The signing secret: the configured one, else the home's key file (made on first use)."""
    if configured:
        return configured.encode("utf-8")
    path = home / "ui-session.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    try:
        os.link(tmp, path)  # the first process to get here wins; the others read its secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


class SessionSigner:
    """Makes and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: bytes, ttl_seconds: float) -> None:
        if len(secret) < 16:
            raise ValueError("the console's session secret must be at least 16 bytes")
        self.secret, self.ttl = secret, ttl_seconds

    def _sign(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self.secret, f"{purpose}|{data}".encode(), hashlib.sha256).digest())

    def issue(self, key_id: int, prefix: str, now: float | None = None) -> tuple[str, SessionData]:
        data = SessionData(
            key_id, prefix, secrets.token_urlsafe(16), (now or time.time()) + self.ttl
        )
        payload = _b64(
            json.dumps(
                {"k": data.key_id, "p": data.prefix, "s": data.sid, "e": int(data.expires)},
                separators=(",", ":"),
            ).encode()
        )
        return f"{payload}.{self._sign('session', payload)}", data

    def read(self, cookie: str | None, now: float | None = None) -> SessionData | None:
        """The session a cookie carries; None when it is absent, forged or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign("session", payload)):
            return None
        try:
            raw = json.loads(_unb64(payload))
            data = SessionData(int(raw["k"]), str(raw["p"]), str(raw["s"]), float(raw["e"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if data.expires <= (now or time.time()):
            return None
        return data

    def csrf(self, session: SessionData) -> str:
        return self._sign("csrf", session.sid)

    def csrf_ok(self, session: SessionData, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(session))
