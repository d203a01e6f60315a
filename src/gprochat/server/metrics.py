"""Prometheus metrics at ``/metrics`` (prometheus-client).

Each app has its own registry, so several apps in one process (tests) do not clash.
With several worker processes (``gprochat serve --workers N``) the ``serve`` command
sets ``PROMETHEUS_MULTIPROC_DIR``; ``/metrics`` then aggregates every worker's
values (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROC_ENV_VAR", "ServerMetrics"]

MULTIPROC_ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"


class ServerMetrics:
    """The server's metrics, named ``gprochat_*``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gprochat_http_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "gprochat_http_refusals",
            "Requests the HTTP layer answered with an error itself (a head or body too slow, "
            "a URL or head too large, malformed HTTP), by status and reason; also counted in "
            "gprochat_http_requests.",
            ["status", "reason"],
            registry=self.registry,
        )
        self.streams_in_flight = Gauge(
            "gprochat_streams_in_flight",
            "Answers streaming right now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.backend_queued = Gauge(
            "gprochat_backend_queued",
            "Requests waiting for the model backend (a free local-model slot).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.time_to_first_byte = Histogram(
            "gprochat_time_to_first_byte_seconds",
            "Seconds from a request's arrival to the first byte of its answer's body.",
            ["route"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.bytes_streamed = Counter(
            "gprochat_response_body_bytes",
            "Bytes of response bodies sent, by route.",
            ["route"],
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "gprochat_backend_errors",
            "Model backend failures, by backend and stage (before_text, mid_stream).",
            ["backend", "stage"],
            registry=self.registry,
        )

        # The router (backends/router.py): each deployment's requests (each key tried
        # counts), failures (before or after the first text) and failovers (to the next).
        self.deployment_events = {
            event: Counter(
                f"gprochat_deployment_{event}s",
                f"Router deployments' {event}s, by deployment.",
                ["deployment"],
                registry=self.registry,
            )
            for event in ("request", "failure", "failover")
        }

    def count_deployment_event(self, deployment: str, event: str) -> None:
        """Count a router ``event`` (``request``, ``failure``, ``failover``) of ``deployment``."""
        self.deployment_events[event].labels(deployment).inc()

    def render(self) -> bytes:
        """The exposition text: this process's, or every worker's in multiprocess mode."""
        if os.environ.get(MULTIPROC_ENV_VAR):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
