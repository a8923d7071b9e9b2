"""Prometheus metrics shared by every service: RPC counts and latencies per method."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_REQUESTS = Counter(
    "imagesearch_rpc_requests_total",
    "RPCs and HTTP requests served, by service, method and outcome code.",
    ["service", "method", "code"],
)
RPC_LATENCY = Histogram(
    "imagesearch_rpc_latency_seconds",
    "Time to serve an RPC or HTTP request, by service and method.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def observe_request(service: str, method: str, code: str, seconds: float) -> None:
    RPC_REQUESTS.labels(service, method, code).inc()
    RPC_LATENCY.labels(service, method).observe(seconds)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    """Serves /metrics on its own port (gRPC services have no HTTP listener of their own)."""
    if port:
        start_http_server(port, addr=host)
