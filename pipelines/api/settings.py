"""Settings of the HTTP API, from ``SIAMID_API_*`` environment variables.

The image limits that the whole tool shares (minimum side, maximum pixels) stay in
:class:`pipelines.settings.Settings`; these are the ones only a server needs.
"""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIAMID_API_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="interface to bind (local only by default)")
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, description="server processes (uvicorn workers)")
    max_upload_bytes: int = Field(
        default=10 * 2**20, ge=1, description="largest image file accepted, in bytes"
    )
    max_files: int = Field(default=20, ge=1, description="images in one enrolment request")
    poll_seconds: float = Field(
        default=1.0, gt=0, description="how often SQL is asked for a newer published index"
    )
    top_k: int = Field(default=5, ge=1, description="candidate identities when not asked")
    compute_slots: int = Field(
        default_factory=lambda: len(os.sched_getaffinity(0)),
        ge=1,
        description="requests that embed or search at the same time (default: the usable "
        "CPUs); the others wait their turn without holding a thread",
    )
    switch_interval: float = Field(
        default=0.0005,
        gt=0,
        description="seconds a thread may hold the GIL while another waits (Python's default "
        "is 0.005): the event loop and the compute threads take turns sooner, which keeps a "
        "request's many short waits for the GIL short",
    )
    search_threads: int = Field(
        default=1,
        ge=1,
        description="faiss threads per request: requests run side by side, each on one thread",
    )
    key_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="how long a checked key is trusted without asking SQL again: a revoked "
        "key is refused within this time (0: ask SQL on every request)",
    )
    batch_window_ms: float = Field(
        default=1.0,
        ge=0,
        description="dynamic batching: the longest a search (or a face chip to embed) waits "
        "to share one index search (or forward pass) with others while a batch is being "
        "answered; a request that finds none goes at once",
    )
    batch_max: int = Field(
        default=32,
        ge=1,
        description="dynamic batching: a batch goes at once when it holds this many "
        "(1: no batching)",
    )
    access_log: bool = Field(
        default=False,
        description="uvicorn's line per request (off by default: at thousands of requests per "
        "second the log costs more than a search; the metrics count every request)",
    )
    ui: bool = Field(default=True, description="serve the web console under /ui/ (--no-ui)")
    ui_session_minutes: float = Field(
        default=480, gt=0, description="how long a console sign-in lasts"
    )
    ui_secret: str | None = Field(
        default=None,
        min_length=16,
        description="the key that signs console sessions (default: one made once and kept in "
        "SIAMID_HOME/ui-session.key, shared by every worker)",
    )
    ui_secure_cookie: bool = Field(
        default=False,
        description="mark the session cookie Secure even when the request looks like plain "
        "HTTP (behind a TLS proxy); requests that arrive over HTTPS always get it",
    )

    @property
    def max_request_bytes(self) -> int:
        """A whole request body: every file at its limit plus the multipart framing."""
        return self.max_files * self.max_upload_bytes + 64 * 1024
