"""/metrics beyond the nodes: gateway calls as the ledger wrote them (once, with bounded labels),
deployments, jobs, queues and the audit chain; every family served; a scrape's cost fixed.
(A real Prometheus scraping the running console: tests/e2e/test_prometheus.py.)"""

from __future__ import annotations

import re
import secrets
import time

from django.db import connection
from django.test.utils import CaptureQueriesContext

from access.gateway import ledger
from audit import verification
from fleet import metrics
from fleet.catalog.models import ModelArtifact
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node
from tests.helpers import tamper


def _call(people, deployment: Deployment | None, model: str, status: int, latency_ms: float, **over) -> ledger.Usage:
    user = people["dept_user"]
    fields = dict(
        at=time.time(),
        key_id=0,
        key_prefix="abc",
        user_id=user.pk,
        username=user.username,
        role=user.role,
        department_id=user.department_id,
        department="Radiology",
        model=model,
        deployment_id=deployment.pk if deployment else None,
        instance_id=None,
        endpoint="chat",
        stream=False,
        status=status,
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=latency_ms,
        ttft_ms=None,
        input_sha256="0" * 64,
        request_id=secrets.token_hex(8),
        source_ip="127.0.0.1",
    )
    return ledger.Usage(**(fields | over))


def _scrape(client_for) -> str:
    response = client_for("admin").get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def test_calls_are_counted_as_written_once_with_bounded_labels(transactional_db, people, client_for):
    model = ModelArtifact.objects.create(name="llama", path="/models/llama")
    chat = Deployment.objects.create(name="chat", model=model, options={})
    calls = [
        _call(people, chat, "chat", 200, 40, stream=True, ttft_ms=20),
        _call(people, chat, "llama", 200, 300),  # called by the model's name: its own series
        _call(people, chat, "chat", 200, 700),
        _call(people, None, "anything-anyone-typed", 404, 2),  # a refusal: no name of the caller's choosing
    ]
    assert ledger.write(calls) == 4
    assert ledger.write(calls[:1]) == 0  # delivered twice, written and counted once
    body = _scrape(client_for)
    labels = 'model="chat",deployment="chat",department="Radiology",endpoint="chat"'
    assert f'fleet_gateway_requests_total{{{labels},code="200"}} 2' in body
    assert (
        'fleet_gateway_requests_total{model="",deployment="",department="Radiology",endpoint="chat",code="404"} 1'
        in body
    )
    assert "anything-anyone-typed" not in body
    assert 'fleet_gateway_prompt_tokens_total{model="chat",deployment="chat",department="Radiology"} 20' in body
    assert 'fleet_gateway_completion_tokens_total{model="llama",deployment="chat",department="Radiology"} 5' in body
    histogram = 'fleet_gateway_request_duration_seconds_bucket{model="chat",deployment="chat",le="%s"} %d'
    for le, n in (("0.025", 0), ("0.05", 1), ("0.5", 1), ("1", 2), ("+Inf", 2)):
        assert histogram % (le, n) in body
    assert 'fleet_gateway_request_duration_seconds_sum{model="chat",deployment="chat"} 0.74' in body
    assert 'fleet_gateway_ttft_seconds_bucket{model="chat",deployment="chat",le="0.025"} 1' in body
    assert 'fleet_gateway_ttft_seconds_count{model="chat",deployment="chat"} 1' in body


def test_deployments_jobs_queues_and_the_chain_are_served(transactional_db, people, client_for):
    model = ModelArtifact.objects.create(name="llama", path="/models/llama")
    chat = Deployment.objects.create(name="chat", model=model, options={}, replicas=2)
    node = Node.objects.create(name="gpu-a", state=NodeState.ONLINE, address="10.0.0.2")
    Instance.objects.create(deployment=chat, replica=0, node=node, port=9001, state=InstanceState.READY, restarts=2)
    Instance.objects.create(deployment=chat, replica=1, node=node, port=9002, state=InstanceState.CRASHED, restarts=1)
    Job.objects.create(kind=JobKind.QUANTIZE, state=JobState.FAILED, model=model, params={})
    run = verification.run(full=True)
    assert run.ok and run.intact_up_to > 0
    body = _scrape(client_for)
    for line in (
        'fleet_deployment_replicas_wanted{deployment="chat"} 2',
        'fleet_deployment_replicas_ready{deployment="chat"} 1',
        'fleet_instances{deployment="chat",state="crashed"} 1',
        'fleet_instance_restarts{deployment="chat"} 3',
        'fleet_jobs{kind="quantize",state="failed"} 1',
        'fleet_jobs{kind="benchmark",state="queued"} 0',
        'fleet_celery_queue_length{queue="console"}',
        "fleet_audit_chain_broken 0",
    ):
        assert line in body, line
    last = int(re.search(r"^fleet_audit_events (\d+)$", body, re.M).group(1))
    assert last >= run.intact_up_to and f"fleet_audit_verified_event {run.intact_up_to}\n" in body
    tamper("UPDATE audit_auditevent SET actor_name = 'someone-else' WHERE seq = %s", [run.intact_up_to])
    assert not verification.run(full=True).ok
    assert "fleet_audit_chain_broken 1" in _scrape(client_for)


def test_every_family_is_served_and_a_scrape_costs_the_same_whatever_the_fleet(transactional_db, people, client_for):
    model = ModelArtifact.objects.create(name="llama", path="/models/llama")

    def grow(n: int) -> None:
        for i in range(n):
            node = Node.objects.create(
                name=f"n{i}-{secrets.token_hex(2)}",
                state=NodeState.ONLINE,
                address=f"10.0.1.{i}",
                last_sample={"gpus": [{"i": g, "util": 5, "temp": 40, "ecc": 0, "xid": 0} for g in range(8)]},
            )
            d = Deployment.objects.create(name=f"d{i}-{secrets.token_hex(2)}", model=model, options={})
            Instance.objects.create(deployment=d, replica=0, node=node, port=9000 + i, state=InstanceState.READY)
        ledger.write([_call(people, d, d.name, 200, 10) for d in Deployment.objects.all()])

    grow(1)
    with CaptureQueriesContext(connection) as small:
        body = _scrape(client_for)
    for name, (kind, _help) in metrics.SERIES.items():
        assert f"# TYPE {name} {kind}\n" in body, name
    grow(20)
    with CaptureQueriesContext(connection) as large:
        body = _scrape(client_for)
    assert len(large.captured_queries) == len(small.captured_queries)
    assert body.count("fleet_gpu_temperature_celsius{") == 21 * 8
