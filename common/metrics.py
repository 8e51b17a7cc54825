"""What every process's Prometheus metrics share: the HTTP request counter and latency
histogram, named ``mydfs_<role>_http_requests`` and ``mydfs_<role>_http_request_seconds``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def http_metrics(role: str, registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The request counter (by route, method, status) and latency histogram (by route)."""
    requests = Counter(
        f"mydfs_{role}_http_requests",
        "HTTP requests",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        f"mydfs_{role}_http_request_seconds",
        "HTTP request latency",
        ["route"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return requests, latency
