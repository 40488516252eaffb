"""The Kubernetes manifests (deploy/kubernetes): `kubectl kustomize` renders each overlay, every
object validates strictly against the Kubernetes schemas offline, and what the README promises of
them holds — non-root read-only processes with resources, the readiness probe on /readyz, the
production overlay without in-namespace datastores, and the same commands as docker-compose.yml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from django.urls import resolve

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["base", "overlays/production"]
KUBECTL = shutil.which("kubectl")
# the oldest Kubernetes the manifests promise (README "The console on Kubernetes")
KUBERNETES_VERSION = "1.32.0"
# CI installs Debian's kubectl (.ci/run); a developer without it skips, CI fails.
needs_kubectl = pytest.mark.skipif(KUBECTL is None and not os.environ.get("CI"), reason="kubectl not installed")
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def render(overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL, "kubectl is installed by .ci/run (Debian's kubectl)"
    done = subprocess.run([KUBECTL, "kustomize", str(KUSTOMIZE / overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] in POD_KINDS}


def compose_commands() -> dict[str, list[str]]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return {name: s["command"] for name, s in services.items() if "command" in s}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    if KUBECTL is None and not os.environ.get("CI"):
        pytest.skip("kubectl not installed")
    return request.param, render(request.param)


@needs_kubectl
def test_every_rendered_object_validates_strictly(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, objects = rendered
    assert len(objects) >= 15, f"{overlay} rendered only {len(objects)} objects"
    for obj in objects:
        # strict: an unknown field (a typo) fails, as well as a wrong type or a missing field
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_what_the_api_server_would() -> None:
    """The check above can fail: a misspelt field and a wrong type are both refused."""
    typo = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "date": {}}
    wrong = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two"}}
    for obj in (typo, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@needs_kubectl
def test_every_process_runs_unprivileged_with_resources(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    for name, spec in pod_specs(objects).items():
        assert spec.get("securityContext", {}).get("seccompProfile") == {"type": "RuntimeDefault"}, name
        pod_user = spec.get("securityContext", {})
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            context = {**pod_user, **container.get("securityContext", {})}
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert "ALL" in context.get("capabilities", {}).get("drop", []), where
            assert container["resources"]["requests"].get("memory"), where
            if where == "fleet-agent/state":  # the one root step: chown of the node's state dir
                assert context["runAsUser"] == 0 and context["capabilities"]["add"] == ["CHOWN"]
                continue
            assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) > 0, where
            if not where.startswith(("fleet-agent/", "fleet-postgres/", "fleet-redis/")):
                # the console's own processes: bounded memory, an image that runs as uid 10001
                assert container["resources"]["limits"].get("memory"), where
                assert context["runAsUser"] == 10001, where
    assert re.search(r"^USER 10001$", (ROOT / "Dockerfile").read_text(), re.M), "runAsNonRoot needs a numeric USER"


@needs_kubectl
def test_web_is_ready_on_readyz_and_every_config_key_is_read(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    web = pod_specs(objects)["fleet-web"]["containers"][0]
    probe = web["readinessProbe"]["httpGet"]
    assert resolve(probe["path"]).url_name == "readyz"
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "fleet-console-config")
    host = next(h["value"] for h in probe["httpHeaders"] if h["name"] == "Host")
    assert host in config["data"]["ALLOWED_HOSTS"].split(","), "the probe's Host must be allowed"
    packages = ("console", "fleet", "access", "audit")
    sources = "\n".join(p.read_text() for d in packages for p in (ROOT / d).rglob("*.py"))
    for key in config["data"]:
        assert f'"{key}"' in sources, f"{key} is set in the ConfigMap but nothing reads it"


@needs_kubectl
def test_the_processes_run_what_docker_compose_runs(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    specs = pod_specs(objects)
    compose = compose_commands()
    for service in ("web", "worker", "beat"):
        assert specs[f"fleet-{service}"]["containers"][0]["command"] == compose[service], service
    # the agent endpoint: the same, with the certificate where the TLS secret is mounted
    agents = specs["fleet-agents"]["containers"][0]["command"]
    expected = [a.replace("/var/lib/fleet/tls/server.pem", "/etc/fleet/tls/tls.crt") for a in compose["agents"]]
    expected = [a.replace("/var/lib/fleet/tls/server.key", "/etc/fleet/tls/tls.key") for a in expected]
    assert agents == expected


@needs_kubectl
def test_the_agent_runs_on_labelled_gpu_nodes_only(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    agent = next(o for o in objects if o["kind"] == "DaemonSet")
    spec = agent["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"fleet-console/gpu": "true"} and spec["runtimeClassName"] == "nvidia"
    assert agent["metadata"]["namespace"] == "fleet-nodes"
    # the agent never gets the console's secrets: only its own config and its join token
    env_sources = [s for c in spec["containers"] for s in c.get("envFrom", [])]
    assert env_sources == [{"configMapRef": {"name": "fleet-agent-config"}}]
    assert {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v} == {"fleet-agent-join"}


@needs_kubectl
def test_production_uses_external_datastores_and_keeps_one_of_each_through_a_drain() -> None:
    objects = render("overlays/production")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert not {n for n in names if n[1] in ("fleet-postgres", "fleet-redis")}, names
    replicas = {o["metadata"]["name"]: o["spec"].get("replicas") for o in objects if o["kind"] in POD_KINDS}
    assert replicas["fleet-web"] == replicas["fleet-worker"] == replicas["fleet-agents"] == 2
    assert replicas["fleet-beat"] == 1, "exactly one beat"
    budgets = {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert budgets == {"fleet-web", "fleet-worker", "fleet-agents"}
    images = {c["image"] for spec in pod_specs(objects).values() for c in spec["containers"]}
    assert images == {"registry.example.org/fleet-console:0.1.0"}
