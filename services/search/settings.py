"""Search service settings, read from SEARCH_* environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class SearchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SEARCH_", env_nested_delimiter="__", extra="ignore")

    port: int = 50052
    metrics_port: int = 9102
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: str = ""
    # Seconds for one Milvus call before the service reports it unavailable.
    milvus_timeout_s: float = 10.0
    # Every collection this service creates gets this prefix, so a shared Milvus stays tidy.
    collection_prefix: str = "imagesearch_"
    # Default index for new collections; IVF_PQ suits albums of millions of images.
    index_type: str = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    # Search-time breadth of HNSW; raised to top_k where top_k is larger.
    hnsw_ef: int = 64
    max_top_k: int = 1000
