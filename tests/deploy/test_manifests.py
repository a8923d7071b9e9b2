"""The deployment files agree with the code: Dockerfile, docker-compose.yml and the kustomize manifests.

The settings classes (services/*/settings.py) are the contract: every variable a deployment sets must be
one of their fields (pydantic-settings ignores unknown ones silently, so a typo would fall back to a
default unnoticed), its value must parse, and ports, probes, Services and targets must agree with them.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from services.common import healthcheck
from services.devstack import ROOT
from services.extractor.settings import ExtractorSettings
from services.gateway.settings import GatewaySettings
from services.search.settings import SearchSettings

K8S_DIR = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "docker-compose.gpu.yml")
K8S_VERSION = "1.32.0"

SETTINGS: dict[str, type[BaseSettings]] = {
    "extractor": ExtractorSettings,
    "search": SearchSettings,
    "gateway": GatewaySettings,
}
# Dockerfile target -> the service (settings class) its image runs.
TARGET_SERVICE = {"extractor": "extractor", "extractor-gpu": "extractor", "search": "search", "gateway": "gateway"}
IMAGE_REPOSITORY = "imagesearch/"
# Variables a container may set that are not settings (none are used today).
NON_SETTINGS_VARS: frozenset[str] = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})
PLACEHOLDER_SECRET = "from-a-secret"


# --- reading the files ---------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    copies: list[tuple[str | None, list[str]]] = field(default_factory=list)  # (--from stage, sources)
    exposed: set[int] = field(default_factory=set)
    cmd: list[str] = field(default_factory=list)


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


@cache
def dockerfile_stages() -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            words = args.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"every stage is named: FROM {args}"
            current = stages[words[2]] = Stage(name=words[2], base=words[0])
        elif current is None:
            continue
        elif keyword in ("COPY", "ADD"):
            words = json.loads(args) if args.startswith("[") else shlex.split(args)
            source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            current.copies.append((source_stage, paths[:-1]))
        elif keyword == "EXPOSE":
            current.exposed = {int(p.split("/")[0]) for p in args.split()}
        elif keyword == "CMD":
            current.cmd = json.loads(args)
    return stages


def service_targets() -> dict[str, Stage]:
    return {name: stage for name, stage in dockerfile_stages().items() if name in TARGET_SERVICE}


def image_target(image: str) -> str | None:
    """The Dockerfile target an image of ours is built from (imagesearch/<target>[:tag]), else None."""
    repository = image.rsplit("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    name = last.split(":", 1)[0]
    return name if IMAGE_REPOSITORY.rstrip("/") in repository.split("/") else None


def load_compose(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: expand_defaults(str(value)) for key, value in env.items()}


def expand_defaults(value: str) -> str:
    """Compose interpolation with the defaults written in the file: ${VAR:-default} -> default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_compose(COMPOSE_FILES[0])["services"]
    return services


def our_compose_services() -> dict[str, tuple[str, dict[str, Any]]]:
    """Compose service name -> (the Dockerfile target of its image, its definition)."""
    ours = {}
    for name, service in compose_services().items():
        target = image_target(str(service.get("image", "")))
        if target is not None:
            ours[name] = (target, service)
    return ours


@cache
def rendered_k8s() -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed, so deploy/k8s cannot be rendered (it ships on the project's machines)")
    result = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in rendered_k8s() if doc["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    return {**k8s_objects("Deployment"), **k8s_objects("StatefulSet")}


def pod_containers(workload: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def our_k8s_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any], str]]:
    """(workload name, workload, container, service) for every container running one of our images."""
    for name, workload in k8s_objects("Deployment").items():
        for container in pod_containers(workload):
            target = image_target(container["image"])
            if target is not None:
                yield name, workload, container, TARGET_SERVICE[target]


def k8s_container_env(container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets from its ConfigMaps and env (Secret references as a placeholder)."""
    config_maps = k8s_objects("ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: only ConfigMaps are used with envFrom"
        ref = source["configMapRef"]["name"]
        assert ref in config_maps, f"{container['name']} reads ConfigMap {ref!r}, which is not in deploy/k8s"
        env.update(config_maps[ref].get("data", {}))
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", PLACEHOLDER_SECRET)
    return env


def settings_from_env(service: str, env: dict[str, str]) -> Any:
    """The service's settings as its process would build them from exactly these variables."""
    cls = SETTINGS[service]
    prefix = str(cls.model_config.get("env_prefix", ""))
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.upper().startswith(prefix):
                mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        return cls()


def setting_names(service: str) -> set[str]:
    cls = SETTINGS[service]
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in cls.model_fields}


def service_ports(service: str, settings: Any) -> set[int]:
    """The ports a service listens on: gRPC, metrics (when on) and, for the gateway, HTTP."""
    ports = {settings.port}
    if settings.metrics_port:
        ports.add(settings.metrics_port)
    if service == "gateway":
        ports.add(settings.http_port)
    return ports


def metrics_port(service: str, settings: Any) -> int:
    """Where Prometheus scrapes: the metrics port, or the gateway's HTTP port when that is off."""
    port = int(settings.metrics_port)
    return port if port or service != "gateway" else int(settings.http_port)


def split_target(target: str) -> tuple[str, int]:
    """'dns:///host.ns.svc:50051' -> ('host', 50051)."""
    address = target.removeprefix("dns:///").removeprefix("dns:")
    host, _, port = address.rpartition(":")
    return host.split(".", 1)[0], int(port)


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or the name of one of the container's ports) as a number."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"{container['name']} has no port named {port!r}"
    return int(named[port])


def service_for(workload: dict[str, Any]) -> dict[str, Any]:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    matching = [
        svc for svc in k8s_objects("Service").values()
        if svc["spec"].get("selector") and all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    ]
    assert len(matching) == 1, f"{workload['metadata']['name']}: expected one Service selecting it, got {matching}"
    return matching[0]


# --- Kubernetes: schema ------------------------------------------------------------------------------------


def test_kustomize_renders_documents_that_pass_strict_schema_validation() -> None:
    failures = []
    for doc in rendered_k8s():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_strict_schema_validation_rejects_unknown_fields_and_wrong_types() -> None:
    good = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"A": "1"}}
    kubernetes_validate.validate(good, K8S_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**good, "metadata": {"name": "x", "nmae": "y"}}, K8S_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**good, "data": {"A": 1}}, K8S_VERSION, strict=True)


def test_every_k8s_object_lives_in_the_imagesearch_namespace() -> None:
    namespaced = [doc for doc in rendered_k8s() if doc["kind"] != "Namespace"]
    assert {doc["metadata"].get("namespace") for doc in namespaced} == {"imagesearch"}
    assert set(k8s_objects("Namespace")) == {"imagesearch"}


# --- the settings contract -------------------------------------------------------------------------------


def test_every_variable_compose_sets_for_a_service_is_a_field_of_its_settings() -> None:
    for name, (target, service) in our_compose_services().items():
        settings_service = TARGET_SERVICE[target]
        unknown = set(compose_env(service)) - setting_names(settings_service) - NON_SETTINGS_VARS
        assert not unknown, f"compose service {name} sets {sorted(unknown)}, not fields of {settings_service} settings"


def test_every_variable_k8s_sets_for_a_service_is_a_field_of_its_settings() -> None:
    seen = set()
    for name, _, container, service in our_k8s_containers():
        seen.add(service)
        unknown = set(k8s_container_env(container)) - setting_names(service) - NON_SETTINGS_VARS
        assert not unknown, f"{name}/{container['name']} sets {sorted(unknown)}, not fields of {service} settings"
    assert seen == set(SETTINGS)


def test_every_config_map_belongs_to_a_service_and_holds_only_its_settings() -> None:
    for name, config_map in k8s_objects("ConfigMap").items():
        assert name in SETTINGS, f"ConfigMap {name} is not one of the services'"
        unknown = set(config_map.get("data", {})) - setting_names(name)
        assert not unknown, f"ConfigMap {name} holds {sorted(unknown)}, not fields of {name} settings"


def test_every_deployed_value_parses_as_its_settings_type() -> None:
    for target, service in our_compose_services().values():
        settings_from_env(TARGET_SERVICE[target], compose_env(service))  # raises ValidationError on a bad value
    for gpu_name, gpu_service in load_compose(COMPOSE_FILES[1])["services"].items():
        env = {**compose_env(compose_services()[gpu_name]), **compose_env(gpu_service)}
        settings_from_env(TARGET_SERVICE[str(image_target(gpu_service["image"]))], env)
    for _, _, container, service in our_k8s_containers():
        settings_from_env(service, k8s_container_env(container))


def test_s3_credentials_come_from_the_secret_and_not_from_config_maps() -> None:
    secrets = k8s_objects("Secret")
    for config_map in k8s_objects("ConfigMap").values():
        assert not {k for k in config_map.get("data", {}) if k.endswith(("_ACCESS_KEY", "_SECRET_KEY", "_TOKEN"))}
    for name, _, container, service in our_k8s_containers():
        if service != "gateway":
            continue
        refs = {
            item["name"]: item["valueFrom"]["secretKeyRef"] for item in container.get("env", []) if "valueFrom" in item
        }
        assert {"GATEWAY_S3_ACCESS_KEY", "GATEWAY_S3_SECRET_KEY"} <= set(refs), f"{name}/{container['name']}"
        for ref in refs.values():
            assert ref["name"] in secrets, f"Secret {ref['name']} is not in deploy/k8s"
            assert ref["key"] in secrets[ref["name"]]["stringData"]


def test_placeholder_secret_values_are_marked_as_placeholders() -> None:
    for secret in k8s_objects("Secret").values():
        for key, value in secret.get("stringData", {}).items():
            assert value == "" or "CHANGE-ME" in value, f"Secret value {key} looks real; keep placeholders marked"


# --- ports ---------------------------------------------------------------------------------------------------


def test_k8s_container_ports_probes_and_metrics_annotations_agree_with_the_settings() -> None:
    for name, workload, container, service in our_k8s_containers():
        if container in workload["spec"]["template"]["spec"].get("initContainers", []):
            continue
        settings = settings_from_env(service, k8s_container_env(container))
        declared = {p["containerPort"] for p in container["ports"]}
        assert declared == service_ports(service, settings), f"{name}: container ports vs settings"
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            if probe is None:
                continue
            if "grpc" in probe:
                assert probe["grpc"]["port"] == settings.port, f"{name} {probe_name}: gRPC health is on {settings.port}"
            else:
                assert service == "gateway", f"{name} {probe_name}: gRPC services use grpc probes"
                port = container_port(container, probe["httpGet"]["port"])
                assert port == settings.http_port, f"{name} {probe_name}: HTTP is on {settings.http_port}"
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == metrics_port(service, settings), f"{name}: scrape port"
        assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"


def test_gateway_probes_are_http_readyz_and_healthz() -> None:
    gateway = k8s_objects("Deployment")["gateway"]
    (container,) = pod_containers(gateway, init=False)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_grpc_services_have_grpc_readiness_and_liveness_probes() -> None:
    for name in ("extractor", "search"):
        (container,) = pod_containers(k8s_objects("Deployment")[name], init=False)
        assert "grpc" in container["readinessProbe"] and "grpc" in container["livenessProbe"], name


def test_k8s_service_ports_lead_to_the_container_ports_of_the_same_number() -> None:
    for workload in workloads().values():
        (container,) = pod_containers(workload, init=False)
        svc = service_for(workload)
        declared = {p["containerPort"] for p in container["ports"]}
        for port in svc["spec"]["ports"]:
            target = container_port(container, port.get("targetPort", port["port"]))
            assert target in declared, f"Service {svc['metadata']['name']} port {port['name']} -> {target}"
            assert port["port"] == target, f"Service {svc['metadata']['name']}: port and targetPort differ"


def test_gateway_targets_name_the_k8s_services_and_their_ports() -> None:
    (container,) = pod_containers(k8s_objects("Deployment")["gateway"], init=False)
    gateway = settings_from_env("gateway", k8s_container_env(container))
    services = k8s_objects("Service")
    for peer, target in (("extractor", gateway.extractor_target), ("search", gateway.search_target)):
        (peer_container,) = pod_containers(k8s_objects("Deployment")[peer], init=False)
        peer_settings = settings_from_env(peer, k8s_container_env(peer_container))
        host, port = split_target(target)
        assert host == service_for(k8s_objects("Deployment")[peer])["metadata"]["name"], target
        assert port == peer_settings.port, f"{target}: {peer} listens on {peer_settings.port}"
        assert port in {p["port"] for p in services[host]["spec"]["ports"]}, f"{target}: not a port of Service {host}"
    redis_host, redis_port = split_target(gateway.redis_url.removeprefix("redis://").split("/", 1)[0])
    s3_host, s3_port = split_target(gateway.s3_endpoint)
    for host, port in ((redis_host, redis_port), (s3_host, s3_port)):
        assert port in {p["port"] for p in services[host]["spec"]["ports"]}, f"no Service {host}:{port}"


def test_compose_ports_healthchecks_and_targets_agree_with_the_settings() -> None:
    compose = compose_services()
    resolved = {
        name: (TARGET_SERVICE[target], settings_from_env(TARGET_SERVICE[target], compose_env(service)))
        for name, (target, service) in our_compose_services().items()
    }
    for name, (service, settings) in resolved.items():
        test = compose[name].get("healthcheck", {}).get("test")
        if test is not None:
            assert test[1:] == ["python", "-m", "services.common.healthcheck", service], f"{name} healthcheck"
        for published in compose[name].get("ports", []):
            container = int(str(published).rsplit(":", 1)[-1])
            assert container in service_ports(service, settings), f"{name} publishes {published}"
    gateway = resolved["gateway"][1]
    assert "8000:8000" in compose["gateway"]["ports"], "the gateway's HTTP port is published"
    for peer, target in (("extractor", gateway.extractor_target), ("search", gateway.search_target)):
        host, port = split_target(target)
        assert host == peer and host in compose, target
        assert port == resolved[peer][1].port, f"{target}: {peer} listens on {resolved[peer][1].port}"
        assert compose["gateway"]["depends_on"][peer]["condition"] == "service_healthy"
    assert split_target(gateway.s3_endpoint)[0] in compose
    assert split_target(gateway.redis_url.removeprefix("redis://").split("/", 1)[0])[0] in compose
    search = resolved["search"][1]
    assert split_target(search.milvus_uri.removeprefix("http://"))[0] in compose


def test_blobs_store_and_gateway_share_the_s3_credentials() -> None:
    compose = compose_services()
    minio = compose_env(compose["blobs"])
    gateway = settings_from_env("gateway", compose_env(compose["gateway"]))
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (gateway.s3_access_key, gateway.s3_secret_key)


def test_dockerfile_exposes_the_default_ports_of_each_service() -> None:
    for name, stage in service_targets().items():
        service = TARGET_SERVICE[name]
        assert stage.exposed == service_ports(service, settings_from_env(service, {})), name


def test_healthcheck_module_finds_each_service_port_in_its_settings() -> None:
    assert set(healthcheck.SETTINGS_CLASSES) == set(SETTINGS)
    for service in SETTINGS:
        assert healthcheck.service_port(service) == settings_from_env(service, {}).port


# --- GPU ---------------------------------------------------------------------------------------------------------


def test_k8s_extractor_gets_a_gpu_on_gpu_nodes_and_prefers_cuda() -> None:
    extractor = k8s_objects("Deployment")["extractor"]
    pod = extractor["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert image_target(container["image"]) == "extractor-gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    settings = settings_from_env("extractor", k8s_container_env(container))
    assert settings.providers[0] == "CUDAExecutionProvider"


def test_extractor_is_autoscaled() -> None:
    (hpa,) = k8s_objects("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "extractor"}
    (container,) = pod_containers(k8s_objects("Deployment")["extractor"], init=False)
    assert "cpu" in container["resources"]["requests"], "a CPU utilisation target needs a CPU request"


def test_every_k8s_container_has_resource_requests_and_memory_limits() -> None:
    for name, workload in workloads().items():
        for container in pod_containers(workload):
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{name}/{container['name']}"
            assert "memory" in resources.get("limits", {}), f"{name}/{container['name']}"


# --- images and the Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_defines_a_target_for_each_service_running_its_module() -> None:
    targets = service_targets()
    assert set(targets) == set(TARGET_SERVICE)
    for name, stage in targets.items():
        service = TARGET_SERVICE[name]
        assert stage.cmd == ["python", "-m", f"services.{service}"], name
        assert (ROOT / "services" / service).is_dir(), f"services/{service} is missing"


def test_images_in_compose_and_k8s_are_dockerfile_targets_of_the_right_service() -> None:
    stages = dockerfile_stages()
    for path in COMPOSE_FILES:
        for name, service in load_compose(path)["services"].items():
            target = image_target(str(service.get("image", "")))
            if "build" in service:
                assert service["build"]["target"] == target, f"{path.name} {name}: image named after its target"
            if target is not None:
                assert target in stages, f"{path.name} {name}: no Dockerfile target {target}"
    for name, (target, _) in our_compose_services().items():
        assert name not in TARGET_SERVICE or TARGET_SERVICE[target] == name, f"compose {name} runs {target}"
    for name, _, container, service in our_k8s_containers():
        target = str(image_target(container["image"]))
        assert target in stages, f"{name}: no Dockerfile target {target}"
        if container["name"] == name:
            assert service == name, f"Deployment {name} runs the {service} image"


def test_dockerfile_copies_only_files_that_exist_and_are_in_the_build_context() -> None:
    stages = dockerfile_stages()
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    seen: list[str] = []
    for name, stage in stages.items():
        for source_stage, sources in stage.copies:
            if source_stage is not None:
                assert source_stage in seen, f"{name}: COPY --from={source_stage} names no earlier stage"
                continue
            for source in sources:
                relative = source.rstrip("/")
                assert glob.glob(str(ROOT / relative)), f"{name}: COPY {source} does not exist in the repo"
                assert not any(fnmatch.fnmatch(relative, pattern) for pattern in ignored), f"{source} is dockerignored"
        seen.append(name)


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".cache", ".data", "build", ".git"} <= ignored


def test_runtime_images_carry_no_torch() -> None:
    export = dockerfile_stages()["export"]
    assert any("requirements-export.txt" in sources for _, sources in export.copies)
    for name, stage in service_targets().items():
        assert all("requirements-export.txt" not in sources for _, sources in stage.copies), name
        assert stage.base != "export"


# --- docker-compose ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("files", [COMPOSE_FILES[:1], COMPOSE_FILES], ids=["cpu", "gpu-override"])
def test_compose_file_passes_docker_compose_config(files: tuple[Path, ...]) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/setup.sh --dev installs Debian's docker-compose)")
    argv = [binary, *(arg for path in files for arg in ("-f", str(path))), "config", "--quiet"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
