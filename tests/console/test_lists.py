"""One read path per list: for every list, every persona and several filters, the page and its API
endpoint show exactly the same rows (or both refuse). Who sees what:

- nodes, models, deployments, instances, jobs: admins only;
- access requests, grants, gateway keys (metadata, never a secret), usage: admins and auditors see
  everyone's; a department user sees their own (grants and usage: also their department's);
- the audit trail: admins and auditors;
- a user with no role sees no list at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import audit
from access.grants.models import AccessRequest, ApiKey, Grant
from access.people.choices import Role
from access.people.models import Department
from access.usage.models import UsageRecord
from fleet.catalog.models import ModelArtifact
from fleet.deployments.models import Deployment, Instance
from fleet.jobs.models import Job
from fleet.nodes.models import Node
from tests.conftest import PERSONAS, make_user

ROW = re.compile(r'data-(?:row|seq)="(\d+)"')


@dataclass(frozen=True)
class ListCase:
    name: str
    page: str
    api: str
    filters: tuple[dict[str, str], ...]
    api_key: str = "id"  # the row's id in the API's JSON


LISTS = [
    ListCase("nodes", "/nodes/", "/api/nodes/", ({}, {"state": "online"}, {"kind": "cpu", "q": "b"})),
    ListCase("models", "/models/", "/api/models/", ({}, {"q": "llama"}, {"sensitivity": "restricted"})),
    ListCase("deployments", "/deployments/", "/api/deployments/", ({}, {"q": "chat"}, {"desired_state": "stopped"})),
    ListCase("instances", "/instances/", "/api/instances/", ({}, {"state": "ready"}, {"node": "gpu-a"})),
    ListCase("jobs", "/jobs/", "/api/jobs/", ({}, {"kind": "benchmark"}, {"state": "queued", "q": "llama"})),
    ListCase(
        "access requests", "/access/requests/", "/api/access-requests/", ({}, {"state": "pending"}, {"q": "other"})
    ),
    ListCase(
        "grants",
        "/access/grants/",
        "/api/grants/",
        ({"show": "all"}, {"show": "active"}, {"show": "ended", "q": "qwen"}),
    ),
    ListCase("keys", "/access/keys/", "/api/api-keys/", ({"show": "all"}, {"show": "revoked"}, {"q": "triage"})),
    ListCase("usage", "/usage/", "/api/usage/", ({}, {"model": "demo-chat"}, {"scope": "mine"})),
    ListCase(
        "audit", "/audit/", "/api/audit/events/", ({}, {"action": "list.test"}, {"actor": "admin"}), api_key="seq"
    ),
]


@pytest.fixture
def fleet_rows(people) -> None:
    """Two or more rows of every kind, owned by different people, so each filter and rule shows."""
    other_dept = Department.objects.create(name="Cardiology", slug="cardiology")
    other = make_user("other", Role.DEPT_USER, other_dept)
    gpu = Node.objects.create(name="gpu-a", kind="gpu", state="online", agent_digest="x")
    Node.objects.create(name="cpu-b", kind="cpu", state="offline", agent_digest="y")
    llama = ModelArtifact.objects.create(name="llama-a", path="/m/llama-a", architecture="LlamaForCausalLM")
    qwen = ModelArtifact.objects.create(
        name="qwen-b", path="/m/qwen-b", architecture="Qwen2ForCausalLM", sensitivity="restricted"
    )
    chat = Deployment.objects.create(name="demo-chat", model=llama)
    idle = Deployment.objects.create(name="idle-qwen", model=qwen, desired_state="stopped")
    Instance.objects.create(deployment=chat, replica=0, node=gpu, port=20001, state="ready")
    Instance.objects.create(deployment=idle, replica=0, port=20002, state="stopped")
    Job.objects.create(kind="quantize", model=llama, node=gpu, params={"scheme": "gptq-w4a16"})
    Job.objects.create(
        kind="benchmark",
        deployment=chat,
        model=llama,
        state="succeeded",
        params={"served": "demo-chat", "input_len": 8, "output_len": 8},
    )
    now = timezone.now()
    mine = Grant.objects.create(user=people["dept_user"], expires_at=now + timedelta(days=30))
    mine.models.set([llama])
    ended = Grant.objects.create(department=other_dept, expires_at=now - timedelta(days=1))
    ended.models.set([qwen])
    for user, grant, name, revoked in ((people["dept_user"], mine, "triage", None), (other, ended, "nightly", now)):
        ApiKey.objects.create(grant=grant, user=user, name=name, prefix=name[:8], digest="0" * 64, revoked_at=revoked)
    AccessRequest.objects.create(
        requester=people["dept_user"],
        department=people["dept_user"].department,
        justification="triage",
        duration_days=30,
    )
    AccessRequest.objects.create(
        requester=other, department=other_dept, justification="other work", duration_days=30, state="denied"
    )
    for user, model in ((people["dept_user"], "demo-chat"), (other, "idle-qwen")):
        UsageRecord.objects.create(
            created_at=now,
            user=user,
            department=user.department,
            model=model,
            endpoint="chat",
            status=200,
            latency_ms=5,
            input_sha256="0" * 64,
            request_id=f"r-{model}",
        )
    audit.record(people["admin"], "list.test", None)
    audit.record(people["auditor"], "list.other", None)


def _page_rows(client, url: str) -> set[int] | None:
    response = client.get(url)
    if response.status_code in (302, 403):
        return None  # refused
    assert response.status_code == 200, (url, response.status_code)
    return {int(pk) for pk in ROW.findall(response.content.decode())}


def _api_rows(client, url: str, key: str) -> set[int] | None:
    response = client.get(url)
    if response.status_code in (401, 403):
        return None
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    return {row[key] for row in response.json()["results"]}


@pytest.mark.parametrize("case", LISTS, ids=[c.name for c in LISTS])
def test_the_page_and_the_api_show_the_same_rows(case, client_for, people, fleet_rows):
    seen: dict[tuple[str, int], set[int] | None] = {}
    for persona in PERSONAS:
        client = client_for(persona)
        for number, filters in enumerate(case.filters):
            query = "?" + "&".join(f"{k}={v}" for k, v in filters.items()) if filters else ""
            page = _page_rows(client, case.page + query)
            api = _api_rows(client, case.api + query, case.api_key)
            assert page == api, (case.name, persona, filters, page, api)
            seen[persona, number] = page
    # Not vacuous: the admin sees rows, and the filters narrow them.
    assert seen["admin", 0], case.name
    assert any(seen["admin", n] != seen["admin", 0] for n in range(1, len(case.filters))), case.name
    assert not seen["outsider", 0]


def test_a_department_user_sees_only_their_own_rows(client_for, people, fleet_rows):
    mine = client_for("dept_user")
    keys = mine.get("/api/api-keys/?show=all").json()["results"]
    assert {k["name"] for k in keys} == {"triage"}
    requests = mine.get("/api/access-requests/").json()["results"]
    assert {r["justification"] for r in requests} == {"triage"}
    assert {g["id"] for g in mine.get("/api/grants/?show=all").json()["results"]} == {
        Grant.objects.get(user=people["dept_user"]).pk
    }
    assert {r["user"] for r in mine.get("/api/usage/?scope=department").json()["results"]} == {"dept_user"}


def test_an_auditor_reads_key_metadata_but_never_a_secret(client_for, fleet_rows):
    keys = client_for("auditor").get("/api/api-keys/?show=all").json()["results"]
    assert {k["name"] for k in keys} == {"triage", "nightly"}
    assert all("key" not in k and "digest" not in k for k in keys)


def _more_rows(people) -> None:
    """One more row of every kind (the pages' query counts must not grow with them)."""
    node = Node.objects.create(name="gpu-c", kind="gpu", state="online", agent_digest="z")
    model = ModelArtifact.objects.create(name="mistral-c", path="/m/mistral-c", architecture="MistralForCausalLM")
    deployment = Deployment.objects.create(name="third", model=model)
    Instance.objects.create(deployment=deployment, replica=0, node=node, port=20003, state="ready")
    Job.objects.create(kind="quantize", model=model, node=node, params={"scheme": "w8a8-int8"})
    grant = Grant.objects.create(user=people["dept_user"], expires_at=timezone.now() + timedelta(days=9))
    grant.models.set([model])
    ApiKey.objects.create(grant=grant, user=people["dept_user"], name="third", prefix="third", digest="0" * 64)
    AccessRequest.objects.create(
        requester=people["dept_user"], department=people["dept_user"].department, justification="more", duration_days=9
    )
    UsageRecord.objects.create(
        created_at=timezone.now(),
        user=people["dept_user"],
        model="third",
        endpoint="chat",
        department=people["dept_user"].department,
        status=200,
        latency_ms=5,
        input_sha256="0" * 64,
        request_id="r-third",
    )
    audit.record(people["admin"], "list.more", None)


@pytest.mark.parametrize("case", LISTS, ids=[c.name for c in LISTS])
def test_list_pages_and_apis_use_as_many_queries_for_more_rows(case, client_for, people, fleet_rows):
    client = client_for("admin")

    def count(url: str) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        return len(queries)

    query = "?" + "&".join(f"{k}={v}" for k, v in case.filters[0].items()) if case.filters[0] else ""
    before = count(case.page + query), count(case.api + query)
    _more_rows(people)
    assert (count(case.page + query), count(case.api + query)) == before, case.name
