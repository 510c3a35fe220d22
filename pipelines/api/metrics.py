"""Prometheus metrics of one API process: requests, latency, errors, the served index.

Each application has its own registry (tests build many). Requests are labelled by the route
template (``/v1/identities/{name}``), never by the raw path, so names do not become labels.
With several workers each process counts its own requests; a scrape sees the worker it hits.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets (seconds) around what a query costs: sub-millisecond to seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "siamid_api_requests",
            "HTTP requests answered, by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "siamid_api_request_seconds",
            "Time from request to the end of the response, by route template",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "siamid_api_errors",
            "Answers with an error status: client (4xx) or server (5xx)",
            ["route", "kind"],
            registry=self.registry,
        )
        self.rejected_images = Counter(
            "siamid_api_rejected_images",
            "Uploads refused as images, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.index_version = Gauge(
            "siamid_api_index_version",
            "Index version being served (0: none loaded)",
            registry=self.registry,
        )
        self.index_vectors = Gauge(
            "siamid_api_index_vectors", "Vectors in the served index", registry=self.registry
        )
        self.batches = Counter(
            "siamid_api_batches",
            "Index searches (search) and encoder passes (embed) run for the requests' batches",
            ["kind"],
            registry=self.registry,
        )
        self.batch_items = Counter(
            "siamid_api_batch_items",
            "Probe vectors searched (search) and face chips embedded (embed) in those batches",
            ["kind"],
            registry=self.registry,
        )
        self.index_swaps = Counter(
            "siamid_api_index_swaps",
            "Index versions put in service by this process",
            registry=self.registry,
        )

    def batched(self, kind: str, items: int) -> None:
        self.batches.labels(kind).inc()
        self.batch_items.labels(kind).inc(items)

    def served(self, index_version: int, vectors: int) -> None:
        self.index_version.set(index_version)
        self.index_vectors.set(vectors)
        self.index_swaps.inc()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, "server" if status >= 500 else "client").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body copy): times each request and records its status;
    an exception that escapes the app counts as a 500."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - start)
