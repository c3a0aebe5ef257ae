"""Validate deploy/: Kubernetes manifests against the Kubernetes 1.33 OpenAPI schemas
(``kubernetes-validate``, bundled, offline) plus cross-object checks a schema cannot make; the compose
file and nginx config structurally (no Docker engine in CI)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mllmdr_core.backends.vllm_plugin import serve
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


def _server_env() -> dict[str, str | None]:
    (c,) = _named("Deployment", "mllmdr-server")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in c["env"]}


def _vllm_command(deployment: str) -> tuple[argparse.Namespace, list[str]]:
    """The launcher arguments of a vLLM Deployment and the vLLM command line they give."""
    (c,) = _named("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python3", "-m", "mllmdr_core.backends.vllm_plugin.serve"]
    args = serve.parse_args(c["args"])
    return args, serve.launch_command(args, "python3")


def test_vllm_servers_run_the_plugin_on_gpu_nodes_reachable_only_from_stream_servers() -> None:
    env = _server_env()
    policy = _named("NetworkPolicy", "mllmdr-vllm-clients-only")
    guarded = policy["spec"]["podSelector"]["matchLabels"]
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    server_labels = _named("Deployment", "mllmdr-server")["spec"]["template"]["metadata"]["labels"]
    assert allowed.items() <= server_labels.items() and not guarded.items() <= server_labels.items()
    for name, mode, url_var, model_var in [
        ("mllmdr-vllm", "plugin", "MLLMDR_VLLM_URL", "MLLMDR_VLLM_MODEL"),
        ("mllmdr-vllm-maa", "maa", "MLLMDR_VLLM_MAA_URL", "MLLMDR_VLLM_MAA_MODEL"),
    ]:
        dep = _named("Deployment", name)
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        (c,) = pod["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        assert guarded.items() <= dep["spec"]["template"]["metadata"]["labels"].items(), name
        args, cmd = _vllm_command(name)
        assert args.mode == mode and args.dtype == "bfloat16" and args.max_model_len == 4096
        assert "--enable-mm-embeds" in cmd and not any(a.startswith("--enable-lora") for a in cmd)
        assert ("--runner" in cmd) == (mode == "maa")  # the MAA head as the pooler
        assert "--enable-prompt-embeds" not in cmd  # soft tokens only, not whole prompt embeddings
        # the stream servers call exactly this service, port and served model name
        svc = _named("Service", name)
        assert svc["spec"]["type"] == "ClusterIP"
        assert env[url_var] == f"http://{name}.mllmdr.svc:{svc['spec']['ports'][0]['port']}"
        assert svc["spec"]["ports"][0]["port"] == args.port == c["ports"][0]["containerPort"]
        assert env[model_var] == args.served_model_name
    assert env["MLLMDR_LLM_BACKEND"] == "vllm-native"


def _settings_from(env: dict[str, str]) -> Settings:
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("MLLMDR_") or key == "DATABASE_URL":
                mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        return Settings.from_env()


def _check_vllm_native(settings: Settings) -> None:
    vllm = settings.vllm()
    assert vllm is not None and vllm.native and vllm.llm_weights is False  # no LLM in the stream server
    assert vllm.url and vllm.model and vllm.maa_url and vllm.maa_model


def test_manifest_env_vars_are_the_settings_the_server_reads() -> None:
    """Every MLLMDR_* variable the manifests set is a Settings field, and the server's settings built from
    them select the plugin backend with its MAA server (so the files cannot drift from the code)."""
    fields = set(Settings.model_fields)
    k8s = {k: v for k, v in _server_env().items() if v is not None}  # secrets come from the Secret
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    compose_env = compose["services"]["server1"]["environment"]
    for source, names in [("k8s", set(_server_env())), ("compose", set(compose_env))]:
        for name in names:
            if name.startswith("MLLMDR_"):
                assert name.removeprefix("MLLMDR_").lower() in fields, f"{source}: {name} is read by nothing"
    secrets = {"MLLMDR_API_KEY": "k", "MLLMDR_JWT_SECRET": "j" * 32, "MLLMDR_TURN_SECRET": "t"}
    _check_vllm_native(_settings_from({**k8s, **secrets}))
    plain = {k: v for k, v in compose_env.items() if not v.startswith("${")}  # env-file values
    _check_vllm_native(_settings_from({**plain, **secrets, "MLLMDR_ICE_SERVERS": "[]"}))


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
    assert compose["networks"]["back"].get("internal") is True
    for name in ("vllm", "vllm-maa"):
        vllm = compose["services"][name]
        assert "ports" not in vllm and vllm["networks"] == ["back"], name
        devices = vllm["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        assert (
            vllm["build"]["dockerfile"] == "deploy/vllm/Dockerfile"
            and "./models:/models:ro" in vllm["volumes"]
        )
    assert compose["services"]["postgres"]["networks"] == ["back"]
    assert compose["services"]["lb"]["ports"] == ["8080:80"]
    dockerfile = (DEPLOY / "vllm" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --no-deps ." in dockerfile and "vllm.general_plugins" in dockerfile


def _serve_sh_args(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """What deploy/vllm/serve.sh passes to ``python3`` (a recording stand-in on PATH) for ``env``."""
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    out = subprocess.run(
        ["bash", str(DEPLOY / "vllm" / "serve.sh")],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", **env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.splitlines()


def test_compose_vllm_services_launch_what_the_servers_call(compose: dict[str, Any], tmp_path: Path) -> None:
    """serve.sh, run with each compose vLLM service's environment, starts the package's launcher in the
    service's mode under the model name and port the stream servers are configured with."""
    server_env = compose["services"]["server1"]["environment"]
    assert server_env["MLLMDR_LLM_BACKEND"] == "vllm-native"
    for name, mode, url_var, model_var in [
        ("vllm", "plugin", "MLLMDR_VLLM_URL", "MLLMDR_VLLM_MODEL"),
        ("vllm-maa", "maa", "MLLMDR_VLLM_MAA_URL", "MLLMDR_VLLM_MAA_MODEL"),
    ]:
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        env["GPU_MEMORY_UTILIZATION"] = "0.4"  # compose fills ${…:-default} from the env file
        argv = _serve_sh_args(tmp_path, env)
        assert argv[:2] == ["-m", "mllmdr_core.backends.vllm_plugin.serve"]
        args = serve.parse_args(argv[2:])
        assert (args.mode, args.model_dir, args.dtype) == (mode, "/models/mllmdr", "bfloat16")
        assert server_env[model_var] == args.served_model_name
        assert server_env[url_var] == f"http://{name}:{args.port}"
        cmd = serve.launch_command(args, "python3")
        assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.4"
        assert "--enable-mm-embeds" in cmd and not any(a.startswith("--enable-lora") for a in cmd)
    # the older whole-prompt-embeddings path stays one MODE away
    embeds = serve.parse_args(_serve_sh_args(tmp_path, {"MODEL_DIR": "/m", "MODE": "embeds"})[2:])
    cmd = serve.launch_command(embeds, "python3")
    assert "--enable-prompt-embeds" in cmd and "--no-enable-prefix-caching" in cmd


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
