"""Validate deploy/: Kubernetes manifests against the Kubernetes 1.33 OpenAPI schemas
(``kubernetes-validate``, bundled, offline) plus cross-object checks a schema cannot make; the compose
file and nginx config structurally (no Docker engine in CI)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from stream_server.protocol import IceServer
from stream_server.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.33.0"


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in _k8s_docs() if d["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _by_kind(kind) if d["metadata"]["name"] == name]
    return doc


def _ice_servers(raw: str) -> list[IceServer]:
    """``raw`` as the server reads ``MLLMDR_ICE_SERVERS`` (with a TURN secret set), or ``ConfigError``."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLLMDR_ICE_SERVERS", raw)
        env.setenv("MLLMDR_TURN_SECRET", "x")
        return Settings.from_env().ice_servers


@pytest.mark.parametrize("name,doc", _k8s_docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_matches_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    # strict: unknown fields (typos such as "readinesProbe") fail too
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_check_catches_a_typo() -> None:
    doc = _named("Deployment", "mllmdr-server")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_every_object_has_the_namespace_and_the_required_kinds_exist() -> None:
    kinds = {d["kind"] for _, d in _k8s_docs()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret", "Ingress", "NetworkPolicy"} <= kinds
    for name, doc in _k8s_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "mllmdr", name


def test_selectors_match_labels_and_services_reach_named_ports() -> None:
    deployments = {d["metadata"]["name"]: d for d in _by_kind("Deployment")}
    for dep in deployments.values():
        selector = dep["spec"]["selector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), dep["metadata"]["name"]
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert c["image"] and ":" in c["image"] and not c["image"].endswith(":latest")
            assert c.get("readinessProbe") and c.get("resources", {}).get("requests")
    for svc in _by_kind("Service"):
        targets = [
            d
            for d in deployments.values()
            if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, svc["metadata"]["name"]
        port_names = {
            p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_server_pods_ready_on_readyz_with_secrets_from_the_secret() -> None:
    dep = _named("Deployment", "mllmdr-server")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    secret = _named("Secret", "mllmdr-secrets")
    env = {e["name"]: e for e in c["env"]}
    for var, key in [
        ("MLLMDR_API_KEY", "api-key"),
        ("MLLMDR_JWT_SECRET", "jwt-secret"),
        ("DATABASE_URL", "database-url"),
        ("MLLMDR_TURN_SECRET", "turn-secret"),
    ]:
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "mllmdr-secrets", "key": key} and key in secret["stringData"]
        assert "value" not in env[var]
    assert secret["stringData"]["database-url"].startswith("postgresql+asyncpg://")
    ice = _ice_servers(env["MLLMDR_ICE_SERVERS"]["value"])  # what the server accepts at start-up
    assert any(u.startswith("turn:") for s in ice for u in s.urls) and all(s.username is None for s in ice)
    hpa = _named("HorizontalPodAutoscaler", "mllmdr-server")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mllmdr-server",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    ingress = _named("Ingress", "mllmdr")
    backends = [p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert backends == ["mllmdr-server"]  # vLLM is never routed from outside


def test_vllm_runs_on_gpu_nodes_with_embeds_and_without_prefix_caching_or_lora() -> None:
    dep = _named("Deployment", "mllmdr-vllm")
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = c["args"]
    assert "--enable-prompt-embeds" in args and "--no-enable-prefix-caching" in args
    assert not any(a.startswith("--enable-lora") for a in args)  # merged weights (LoRA + embeds crash)
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert _named("Service", "mllmdr-vllm")["spec"]["type"] == "ClusterIP"
    policy = _named("NetworkPolicy", "mllmdr-vllm-clients-only")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    server_labels = _named("Deployment", "mllmdr-server")["spec"]["template"]["metadata"]["labels"]
    assert allowed.items() <= server_labels.items()
    server_env = {
        e["name"]: e.get("value")
        for e in _named("Deployment", "mllmdr-server")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert server_env["MLLMDR_VLLM_URL"] == "http://mllmdr-vllm.mllmdr.svc:8000"


# ----------------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def test_compose_services_and_references(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"lb", "server1", "server2", "postgres", "vllm"} <= set(services)
    networks, volumes = set(compose["networks"]), set(compose.get("volumes", {}))
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for net in svc.get("networks", []):
            assert net in networks, f"{name}: unknown network {net}"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in volumes, f"{name}: undeclared volume {src}"
            else:
                assert (DEPLOY / src).exists() or src in ("./bundles", "./models"), f"{name}: missing {src}"
        hc = svc.get("healthcheck")
        if name != "coturn":
            assert hc and hc["test"][0] in ("CMD", "CMD-SHELL"), name
        for dep, cond in svc.get("depends_on", {}).items():
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"


def test_compose_servers_share_secrets_and_postgres_and_vllm_is_private(compose: dict[str, Any]) -> None:
    s1, s2 = compose["services"]["server1"], compose["services"]["server2"]
    assert s1 == s2  # same anchor: same image, env, health
    env = s1["environment"]
    assert (
        env["DATABASE_URL"].startswith("postgresql+asyncpg://") and "@postgres:5432/" in env["DATABASE_URL"]
    )
    assert env["MLLMDR_JWT_SECRET"].startswith("${") and env["MLLMDR_API_KEY"].startswith(
        "${"
    )  # from env file
    assert env["MLLMDR_VLLM_URL"] == "http://vllm:8000"
    assert env["MLLMDR_TURN_SECRET"] == "${TURN_SECRET:-}" and env["MLLMDR_ICE_SERVERS"].startswith("${")
    example = dict(
        line.split("=", 1) for line in (DEPLOY / "env.example").read_text().splitlines() if "=" in line
    )
    assert "TURN_SECRET" in example
    assert [s.urls[0] for s in _ice_servers(example["MLLMDR_ICE_SERVERS"])] == [
        "stun:turn.example.org:3478",
        "turn:turn.example.org:3478?transport=udp",
    ]
    vllm = compose["services"]["vllm"]
    assert "ports" not in vllm and vllm["networks"] == ["back"]
    assert compose["networks"]["back"].get("internal") is True
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert compose["services"]["postgres"]["networks"] == ["back"]
    assert compose["services"]["lb"]["ports"] == ["8080:80"]
    serve = (DEPLOY / "vllm" / "serve.sh").read_text()
    assert "--enable-prompt-embeds" in serve and "--no-enable-prefix-caching" in serve
    assert "\n  --enable-lora" not in serve


def test_nginx_is_sticky_by_session_id_and_upgrades_websockets(compose: dict[str, Any]) -> None:
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert conf.count("{") == conf.count("}")
    assert re.search(r"~\^/v1/sessions/\(\?<sid>\[\^/\]\+\)\s+\$sid;", conf)
    assert "hash $mllmdr_session consistent;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf and "proxy_http_version 1.1;" in conf
    upstreams = set(re.findall(r"server (\w+):8765", conf))
    assert upstreams == {"server1", "server2"} <= set(compose["services"])
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "EXPOSE 8765" in dockerfile and "/readyz" in dockerfile and "USER mllmdr" in dockerfile
