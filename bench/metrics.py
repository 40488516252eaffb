"""What one /metrics scrape costs with a large fleet behind it.

    .venv/bin/python bench/metrics.py [--quick]

Fills a throwaway database (bench_metrics) with 100 online nodes × 8 GPUs (a full heartbeat
sample each), 50 deployments with 2 instances each, the ledger's call counters for 50
deployments × 5 departments × 3 answer statuses (750 rows, histograms included), jobs and a
verification run; starts the console under uvicorn and scrapes /metrics over HTTP with a bearer
token, as Prometheus does, after a warm-up.

- scrape_p50_ms / scrape_p99_ms: time for one whole scrape (request to last byte).
- scrape_bytes: the body's size; series: its sample lines.
Ends with one JSON line of these figures.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402

NODES, GPUS, DEPLOYMENTS, DEPARTMENTS = 100, 8, 50, 5


def _fill() -> None:
    from access.people.models import Department
    from access.usage.models import LATENCY_BUCKETS_MS, CallCounter
    from audit import verification
    from fleet.catalog.models import ModelArtifact
    from fleet.deployments.choices import InstanceState
    from fleet.deployments.models import Deployment, Instance
    from fleet.jobs.choices import JobKind, JobState
    from fleet.jobs.models import Job
    from fleet.nodes.choices import NodeState
    from fleet.nodes.models import Node

    gpu = {"util": 63, "mem_used": 61 * 2**30, "mem_total": 80 * 2**30, "temp": 71, "power": 612.5, "ecc": 0, "xid": 0}
    nodes = Node.objects.bulk_create(
        Node(
            name=f"gpu-{i:03d}",
            state=NodeState.ONLINE,
            address=f"10.0.{i // 250}.{i % 250}",
            last_sample={"host": {"cpu": 12.5}, "gpus": [gpu | {"i": g} for g in range(GPUS)]},
        )
        for i in range(NODES)
    )
    model = ModelArtifact.objects.create(name="llama-70b", path="/models/llama-70b")
    deployments = Deployment.objects.bulk_create(
        Deployment(name=f"chat-{i:02d}", model=model, options={}, replicas=2) for i in range(DEPLOYMENTS)
    )
    Instance.objects.bulk_create(
        Instance(deployment=d, replica=r, node=nodes[(2 * i + r) % NODES], port=9000 + r, state=InstanceState.READY)
        for i, d in enumerate(deployments)
        for r in range(2)
    )
    departments = Department.objects.bulk_create(
        Department(name=f"Department {i}", slug=f"department-{i}") for i in range(DEPARTMENTS)
    )
    le = [100 * (b + 1) for b in range(len(LATENCY_BUCKETS_MS))]
    CallCounter.objects.bulk_create(
        CallCounter(
            deployment_id=d.pk,
            department_id=dept.pk,
            model=d.name,
            endpoint="chat",
            status=status,
            calls=le[-1],
            prompt_tokens=123456,
            completion_tokens=65432,
            latency_ms_sum=98765.4,
            latency_le=le,
            ttft_ms_sum=1234.5,
            ttft_count=le[-1],
            ttft_le=le,
        )
        for d in deployments
        for dept in departments
        for status in (200, 429, 503)
    )
    Job.objects.bulk_create(
        Job(kind=kind, state=state, model=model, params={}) for kind in JobKind.values for state in JobState.values
    )
    verification.run(full=True)


def main(quick: bool) -> dict:
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment

    from console.embedded import free_port

    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_metrics"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    token = secrets.token_urlsafe(24)
    proc = None
    try:
        _fill()
        port = free_port()
        db_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "console.asgi:application", "--port", str(port)]
            + ["--lifespan", "off", "--log-level", "warning", "--no-access-log"],
            env=os.environ | {"DATABASE_URL": db_url, "FLEET_METRICS_TOKEN": token},
            cwd=ROOT,
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
        )

        def scrape() -> tuple[float, bytes]:
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as r:
                body = r.read()
            return (time.perf_counter() - started) * 1000, body

        def answers() -> bool:
            try:
                return bool(scrape()[1])
            except OSError:
                return False

        servers.wait_until(answers, 60, 0.2, "the console")
        for _ in range(5):  # warm-up: connections, imports, the query plans
            scrape()
        times, body = [], b""
        for _ in range(10 if quick else 50):
            took, body = scrape()
            times.append(took)
        times.sort()
        text = body.decode()
        return {
            "scrape_p50_ms": round(statistics.median(times), 1),
            "scrape_p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
            "scrape_bytes": len(body),
            "series": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
            "nodes": NODES,
            "gpus": NODES * GPUS,
            "deployments": DEPLOYMENTS,
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 measured scrapes instead of 50 (under 60 s)")
    args = parser.parse_args()
    servers.run(lambda: main(args.quick))
