"""What `GET /metrics` reports, in the Prometheus text format (prometheus_client).

One registry per app, so that several apps in one process (tests) count apart.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Requests by route and status, request latency, queue depth, rows per model call
    and tokens generated."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "seqtool_requests", "HTTP requests answered, by route and status",
            ["route", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "seqtool_request_seconds", "Seconds from a request to the end of its answer",
            ["route"], registry=self.registry,
        )  # fmt: skip
        self.queue = Gauge(
            "seqtool_queue_depth", "Requests waiting for their model", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "seqtool_batch_size", "Rows (sentences or streams) per model call", ["model"],
            buckets=ROWS, registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "seqtool_generated_tokens", "Tokens generated", ["model"], registry=self.registry
        )

    def watch_queue(self, model: str, depth: Callable[[], int]) -> None:
        self.queue.labels(model).set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
