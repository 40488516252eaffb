"""Each persona's home: what it counts, from real rows, in a number of queries that does not grow."""

from __future__ import annotations

import json
import re
import secrets
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import audit
from access.grants import services as grants
from access.grants.models import AccessRequest, DepartmentQuota
from access.usage.models import UsageRecord
from audit.models import AuditEvent, VerifyRun
from fleet.catalog.models import ModelArtifact
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job
from fleet.nodes.models import GPU, Node

GIB = 1024**3


def _calls(people, department, n: int, **extra) -> None:
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            created_at=now - timedelta(minutes=i % 50),
            user=people["dept_user"],
            department=department,
            model="llama-a",
            endpoint="chat",
            status=200,
            prompt_tokens=10,
            completion_tokens=60,
            latency_ms=12.5,
            input_sha256="0" * 64,
            request_id=secrets.token_hex(8),
            **extra,
        )
        for i in range(n)
    )


def _fleet(people, department, n: int) -> None:
    """n of each thing a dashboard counts."""
    for _ in range(n):
        i = Node.objects.count()
        node = Node.objects.create(
            name=f"gpu-{i}", kind="gpu", last_sample={"gpus": [{"i": 0, "util": 40, "mem_used": 6 * GIB}]}
        )
        GPU.objects.create(node=node, index=0, memory_total=24 * GIB)
        model = ModelArtifact.objects.create(name=f"llama-{i}", path=f"/models/llama-{i}")
        deployment = Deployment.objects.create(name=f"chat-{i}", model=model, replicas=2)
        Instance.objects.create(deployment=deployment, replica=0, node=node, port=9000 + i, state=InstanceState.READY)
        Instance.objects.create(
            deployment=deployment, replica=1, node=node, port=9500 + i, state=InstanceState.FAILED, cause="CUDA OOM"
        )
        Job.objects.create(kind=JobKind.QUANTIZE, node=node, model=model, state=JobState.RUNNING, progress=0.4)
        grants.create_grant(people["admin"], user=people["dept_user"], models=[model], duration_days=5)
        AccessRequest.objects.create(
            requester=people["dept_user"], department=department, justification="For letters", duration_days=3
        ).models.add(model)
    _calls(people, department, 3 * n)


def _json(page: str, id_: str) -> dict:
    return json.loads(re.search(rf'<script id="{id_}" type="application/json">(.*?)</script>', page, re.S).group(1))


def test_the_admin_home_shows_the_fleet_at_a_glance(client_for, people, department):
    _fleet(people, department, 2)
    VerifyRun.objects.create(
        started_at=timezone.now(), finished_at=timezone.now(), checked=42, head_hash="0" * 64, ok=True
    )
    page = client_for("admin").get("/").content.decode()
    gpus = page.split('data-testid="gpu-use"')[1].split("</article>")[0]
    assert "40 %" in gpus and "2 GPUs" in gpus and "12.0\xa0GB of 48.0\xa0GB" in gpus
    ready = page.split('data-testid="deployment-readiness"')[1].split("</table>")[0]
    assert ready.count("1 / 2") == 2 and "2 below wanted" in page
    assert page.count("CUDA OOM") == 2
    assert page.split('data-testid="running-jobs"')[1].split("</table>")[0].count("<progress") == 2
    assert ">2</p>" in page.split('data-testid="pending-requests"')[1][:200]
    assert "Intact" in page.split('data-testid="chain-state"')[1][:300]
    traffic = _json(page, "traffic-data")
    assert len(traffic["x"]) == 61 and sum(traffic["series"][0]["values"]) == pytest.approx(6 / 60, abs=0.01)
    assert sum(traffic["series"][1]["values"]) == pytest.approx(6 * 60 / 60, abs=0.1)  # completion tokens/s
    assert 'data-testid="expiring-grants"' in page and page.count("in 4\xa0days") + page.count("in 5\xa0days") >= 2
    # The pending count also waits beside the sidebar's Access link.
    assert re.search(r'>Access <span class="count"[^>]*>2</span>', page)


def test_the_department_users_home_shows_her_models_and_quotas(client_for, people, department):
    _fleet(people, department, 1)
    DepartmentQuota.objects.create(department=department, tokens_per_day=1000)
    page = client_for("dept_user").get("/").content.decode()
    models = page.split('data-testid="my-models"')[1].split("</table>")[0]
    assert "llama-0" in models and "Ready" in models and "?model=llama-0" in models
    quotas = page.split('data-testid="my-quotas"')[1]
    assert "210 of 1000 tokens" in quotas  # three calls of 70 tokens, against the department's day


def test_the_auditors_home_counts_refusals_and_events_per_day(client_for, people, department):
    for status in (200, 403, 429):
        audit.record(people["dept_user"], "gateway.request", None, status=status)
    audit.record(people["auditor"], "audit.export", None, after={"format": "csv", "since": None, "until": None})
    page = client_for("auditor").get("/").content.decode()
    assert re.search(r'data-testid="refused-calls">(\d+)<', page).group(1) == "2"  # the 403 and the 429
    per_day = _json(page, "per-day-data")
    assert len(per_day["x"]) == 14 and sum(per_day["series"][0]["values"]) == AuditEvent.objects.count()
    assert "csv" in page.split('data-testid="latest-exports"')[1][:800]


@pytest.mark.parametrize("persona", ["admin", "dept_user", "auditor"])
def test_each_home_runs_a_constant_number_of_queries(client_for, people, department, persona):
    client = client_for(persona)

    def count(n: int) -> int:
        _fleet(people, department, n)
        client.get("/")  # warm: the playground's keys, a first session write
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/").status_code == 200
        return len(ctx)

    assert count(2) == count(8)
