"""Container health check: asks a service's gRPC health endpoint (grpc.health.v1) whether it is SERVING.

    python -m services.common.healthcheck extractor     # port from ExtractorSettings (EXTRACTOR_PORT)
    python -m services.common.healthcheck 50052         # an explicit port

Exits 0 when the server answers SERVING, 1 otherwise; used by the Dockerfile and docker-compose.yml.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Service name -> its settings class; imported lazily so a check loads only the settings it needs.
SETTINGS_CLASSES = {
    "extractor": "services.extractor.settings:ExtractorSettings",
    "search": "services.search.settings:SearchSettings",
    "gateway": "services.gateway.settings:GatewaySettings",
}


def service_port(target: str) -> int:
    """The gRPC port of a service named in SETTINGS_CLASSES (as its env sets it), or `target` as a number."""
    if target.isdigit():
        return int(target)
    if target not in SETTINGS_CLASSES:
        raise ValueError(f"unknown service {target!r}; expected a port or one of {', '.join(SETTINGS_CLASSES)}")
    module_name, class_name = SETTINGS_CLASSES[target].split(":")
    settings = getattr(importlib.import_module(module_name), class_name)()
    return int(settings.port)


def is_serving(host: str, port: int, timeout_s: float, service: str = "") -> bool:
    """True when the health service at host:port reports SERVING for `service` ("" = the whole server)."""
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.healthcheck",
        description="Exits 0 when a service's gRPC health check answers SERVING, 1 otherwise.",
    )
    parser.add_argument("target", help="a service name (extractor, search, gateway) or a gRPC port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument("--service", default="", help="the health service name to ask about (default: the server)")
    args = parser.parse_args(argv)
    try:
        port = service_port(args.target)
    except ValueError as exc:
        parser.error(str(exc))
    serving = is_serving(args.host, port, args.timeout, args.service)
    if not serving:
        print(f"{args.host}:{port} is not SERVING", file=sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
