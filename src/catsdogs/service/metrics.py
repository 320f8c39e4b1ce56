"""The service's Prometheus metrics, in a registry of their own: `ServiceMetrics`.

Each app gets its own `CollectorRegistry`, so two apps in one process (tests,
or a server and a benchmark) never share or double-register counters. The
names are listed in docs/serve.md; `/metrics` answers them in Prometheus's
text format.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Request latency buckets, in seconds: from a fast /healthz to a photo that waited behind a full queue.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class ServiceMetrics:
    """The counters, gauges and histograms of one service, in their own registry.

    Attributes:
        registry: the `CollectorRegistry` that `/metrics` renders.
        requests: requests by route, method and status.
        latency: request seconds by route.
        in_flight: requests being handled now.
        queue_depth: photos waiting for the model now.
        batch_size: photos per model call.
        inference_seconds: seconds per model call.
        rejections: refused requests or photos by reason (too_large, bad_image, unsupported_type,
            overloaded, unauthorized, timeout, bad_request).
        predictions: answered photos by predicted class.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "catsdogs_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "catsdogs_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "catsdogs_requests_in_flight", "HTTP requests being handled now.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "catsdogs_queue_depth", "Photos decoded and waiting for a model worker now.", registry=self.registry
        )
        self.batch_size = Histogram(
            "catsdogs_batch_size", "Photos per model call.", buckets=BATCH_SIZE_BUCKETS, registry=self.registry
        )
        self.inference_seconds = Histogram(
            "catsdogs_inference_seconds",
            "Seconds per model call (one batch), test-time augmentation included.",
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.rejections = Counter(
            "catsdogs_rejections",
            "Requests or photos refused, by reason: too_large, bad_image, unsupported_type, overloaded, "
            "unauthorized, timeout, bad_request.",
            ["reason"],
            registry=self.registry,
        )
        self.predictions = Counter(
            "catsdogs_predictions", "Photos answered, by predicted class.", ["label"], registry=self.registry
        )

    def count_rejection(self, reason: str) -> None:
        """Count one refused request or photo."""
        self.rejections.labels(reason=reason).inc()

    def watch_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from `depth()` whenever the metrics are rendered."""
        self.queue_depth.set_function(depth)

    def render(self) -> tuple[bytes, str]:
        """Return (the Prometheus text exposition of every metric, its content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
