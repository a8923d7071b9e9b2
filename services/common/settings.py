"""Settings shared by every service; each service extends `ServiceSettings` with its own prefix."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every gRPC service has: where it listens, where its metrics go, how it logs."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 50051
    # Prometheus /metrics; 0 turns it off.
    metrics_port: int = 9100
    log_level: str = "INFO"
    # Seconds in-flight RPCs get to finish on SIGTERM.
    shutdown_grace_s: float = 5.0
    # gRPC messages carry batches of images, so the 4 MB default is too small.
    max_message_bytes: int = 256 * 1024 * 1024
