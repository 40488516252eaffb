"""Access requests, grants, gateway keys, quotas and usage: services, API and pages (real Postgres)."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from access import tokens
from access.grants import services as grants
from access.grants.models import AccessRequest, ApiKey, Grant
from access.people.choices import Role
from access.people.models import Department
from access.usage.models import UsageRecord
from audit.models import AuditEvent
from fleet.catalog.models import ModelArtifact
from tests.conftest import make_user


@pytest.fixture
def models(db) -> dict[str, ModelArtifact]:
    return {n: ModelArtifact.objects.create(name=n, path=f"/models/{n}") for n in ("llama-a", "qwen-b")}


def _request(client, models=("llama-a",), **extra):
    body = {"models": list(models), "justification": "Summaries of discharge letters", "duration_days": 30} | extra
    return client.post("/api/access-requests/", body, content_type="application/json")


def _errors(response) -> dict:
    """Field errors and the summary of a 400 (console.api's error shape)."""
    body = response.json()
    return {k: str(v) for k, v in (body.get("errors") or {}).items()} | {"detail": body.get("detail", "")}


def _events(action: str) -> int:
    return AuditEvent.objects.filter(action=action).count()


def test_request_approve_key_flow_audits_each_step_once(client_for, people, models):
    user_c, admin_c = client_for("dept_user"), client_for("admin")
    asked = _request(user_c)
    assert asked.status_code == 201, asked.json()
    pk = asked.json()["id"]
    assert asked.json()["state"] == "pending" and _events("access.request") == 1
    assert [r["id"] for r in admin_c.get("/api/access-requests/?state=pending").json()["results"]] == [pk]

    approved = admin_c.post(
        f"/api/access-requests/{pk}/approve/",
        {"reason": "ok", "tokens_per_minute": 500},
        content_type="application/json",
    )
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    grant = Grant.objects.get(pk=approved.json()["grant"])
    assert grant.user == people["dept_user"] and grant.tokens_per_minute == 500
    assert timezone.now() + timedelta(days=29) < grant.expires_at < timezone.now() + timedelta(days=31)
    assert _events("access.approve") == 1 and _events("grant.create") == 0  # one event for one action

    created = user_c.post("/api/api-keys/", {"grant": grant.pk, "name": "letters"}, content_type="application/json")
    assert created.status_code == 201, created.json()
    plaintext = created.json()["key"]
    assert tokens.parse_prefix(plaintext, tokens.KEY_KIND) == created.json()["prefix"]
    assert "key" not in user_c.get("/api/api-keys/").json()["results"][0]  # shown once only
    key = ApiKey.objects.get(pk=created.json()["id"])
    assert key.digest == tokens.digest(plaintext) and key.expires_at == grant.expires_at
    assert _events("apikey.create") == 1
    assert plaintext not in json.dumps([e.as_dict() for e in AuditEvent.objects.all()], default=str)

    assert user_c.delete(f"/api/api-keys/{key.pk}/").status_code == 204
    assert _events("apikey.revoke") == 1
    again = user_c.delete(f"/api/api-keys/{key.pk}/")
    assert again.status_code == 409 and "already revoked" in _errors(again)["detail"]
    assert _events("apikey.revoke") == 1


def test_key_checksum_catches_typos():
    new = tokens.generate(tokens.KEY_KIND)
    assert new.plaintext.startswith("flk_") and tokens.parse_prefix(new.plaintext, tokens.KEY_KIND) == new.prefix
    typo = new.plaintext[:-8] + ("x" if new.plaintext[-8] != "x" else "y") + new.plaintext[-7:]
    assert tokens.parse_prefix(typo, tokens.KEY_KIND) is None
    assert tokens.parse_prefix(new.plaintext, tokens.TOKEN_KIND) is None  # a key is not a personal token


def test_deny_needs_a_reason_and_is_shown_to_the_requester(client_for, models):
    user_c, admin_c = client_for("dept_user"), client_for("admin")
    pk = _request(user_c).json()["id"]
    refused = admin_c.post(f"/api/access-requests/{pk}/deny/", {}, content_type="application/json")
    assert refused.status_code == 409 and "reason" in _errors(refused)
    assert (
        admin_c.post(
            f"/api/access-requests/{pk}/deny/", {"reason": "Use the 7B model"}, content_type="application/json"
        ).json()["state"]
        == "denied"
    )
    mine = user_c.get("/api/access-requests/").json()["results"][0]
    assert mine["state"] == "denied" and mine["reason"] == "Use the 7B model"
    twice = admin_c.post(f"/api/access-requests/{pk}/approve/", {}, content_type="application/json")
    assert twice.status_code == 409 and "already denied" in _errors(twice)["detail"]
    assert not Grant.objects.exists()


@pytest.mark.parametrize(
    "body, field, status",
    [  # 400: not the document's shape; 409: well formed, refused by a rule or what exists
        ({"models": []}, "models", 400),
        ({"models": ["no-such-model"]}, "models", 409),
        ({"duration_days": 0}, "duration_days", 400),
        ({"duration_days": 400}, "duration_days", 400),
        ({"justification": "pls"}, "justification", 409),
        ({"justification": ""}, "justification", 400),
    ],
)
def test_bad_requests_are_refused_with_the_field_named(client_for, models, body, field, status):
    response = _request(client_for("dept_user"), **body)
    assert response.status_code == status and field in _errors(response), response.json()
    assert not AccessRequest.objects.exists() and not _events("access.request")


def test_duplicate_pending_request_and_wrong_roles_are_refused(client_for, models):
    user_c = client_for("dept_user")
    assert _request(user_c).status_code == 201
    dup = _request(user_c)
    assert dup.status_code == 409 and "pending" in _errors(dup)["models"]
    assert _request(client_for("admin")).status_code == 409  # a rule: admins grant, they do not ask
    assert _request(client_for("outsider")).status_code == 403
    pk = AccessRequest.objects.get().pk
    assert user_c.post(f"/api/access-requests/{pk}/approve/", {}).status_code == 403  # no self-approval
    assert client_for("auditor").post(f"/api/access-requests/{pk}/approve/", {}).status_code == 403


def test_users_neither_see_nor_revoke_each_others_keys(client_for, people, models, department):
    other = make_user("other", Role.DEPT_USER, department)
    grant_a = grants.create_grant(
        people["admin"], user=people["dept_user"], models=[models["llama-a"]], duration_days=5
    )
    grant_b = grants.create_grant(people["admin"], user=other, models=[models["llama-a"]], duration_days=5)
    mine, _ = grants.create_key(people["dept_user"], grant=grant_a, name="mine")
    theirs, _ = grants.create_key(other, grant=grant_b, name="theirs")
    c = client_for("dept_user")
    assert [k["id"] for k in c.get("/api/api-keys/").json()["results"]] == [mine.pk]
    assert c.get(f"/api/api-keys/{theirs.pk}/").status_code == 404
    assert c.delete(f"/api/api-keys/{theirs.pk}/").status_code == 404
    assert c.post(f"/access/keys/{theirs.pk}/revoke/").status_code == 404
    assert ApiKey.objects.get(pk=theirs.pk).revoked_at is None
    # nor create a key under someone else's grant
    stolen = c.post("/api/api-keys/", {"grant": grant_b.pk, "name": "x"}, content_type="application/json")
    assert stolen.status_code == 409 and "not yours" in _errors(stolen)["grant"]
    # an admin may revoke anyone's
    assert client_for("admin").delete(f"/api/api-keys/{theirs.pk}/").status_code == 204


def test_key_scope_stays_inside_the_grant(client_for, people, models):
    grant = grants.create_grant(people["admin"], user=people["dept_user"], models=[models["llama-a"]], duration_days=5)
    c = client_for("dept_user")
    outside = c.post(
        "/api/api-keys/", {"grant": grant.pk, "name": "k", "models": ["qwen-b"]}, content_type="application/json"
    )
    assert outside.status_code == 409 and "qwen-b" in _errors(outside)["models"]
    Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    expired = c.post("/api/api-keys/", {"grant": grant.pk, "name": "k"}, content_type="application/json")
    assert expired.status_code == 409 and "expired" in _errors(expired)["grant"]
    bad = c.post(
        "/api/api-keys/", {"grant": grant.pk, "name": "k", "tokens_per_minute": 0}, content_type="application/json"
    )
    assert bad.status_code == 400 and "tokens_per_minute" in _errors(bad)
    assert not ApiKey.objects.exists()


def test_department_grant_covers_every_member(people, models, department):
    colleague = make_user("colleague", Role.DEPT_USER, department)
    grant = grants.create_grant(people["admin"], department=department, models=[models["qwen-b"]], duration_days=3)
    _key, plaintext = grants.create_key(colleague, grant=grant, name="team")
    assert plaintext.startswith("flk_") and list(grants.active_grants(people["dept_user"])) == [grant]
    elsewhere = make_user("elsewhere", Role.DEPT_USER, Department.objects.create(name="Oncology", slug="onc"))
    assert list(grants.active_grants(elsewhere)) == []


def test_expiring_list_shows_grants_ending_within_14_days(client_for, people, models):
    soon = grants.create_grant(people["admin"], user=people["dept_user"], models=[models["llama-a"]], duration_days=10)
    grants.create_grant(people["admin"], user=people["dept_user"], models=[models["qwen-b"]], duration_days=30)
    listed = client_for("admin").get("/api/grants/?expiring=1").json()["results"]
    assert [g["id"] for g in listed] == [soon.pk]
    page = client_for("admin").get("/access/grants/?show=expiring")
    assert page.status_code == 200 and "1 expiring within 14 days" in page.content.decode()


def test_revoking_a_grant_is_audited_once_and_admin_only(client_for, people, models):
    grant = grants.create_grant(people["admin"], user=people["dept_user"], models=[models["llama-a"]], duration_days=3)
    assert client_for("dept_user").post(f"/api/grants/{grant.pk}/revoke/").status_code == 403
    assert client_for("admin").post(f"/api/grants/{grant.pk}/revoke/").status_code == 200
    assert client_for("admin").post(f"/api/grants/{grant.pk}/revoke/").status_code == 409
    assert _events("grant.revoke") == 1


@pytest.mark.parametrize(
    "body, status",
    [
        ({"models": ["llama-a"], "duration_days": 5}, 409),  # no holder
        ({"user": "dept_user", "department": "radiology", "models": ["llama-a"], "duration_days": 5}, 409),
        ({"user": "admin", "models": ["llama-a"], "duration_days": 5}, 409),
        ({"user": "dept_user", "models": ["llama-a"], "duration_days": 0}, 400),
    ],
)
def test_bad_direct_grants_are_refused(client_for, models, body, status):
    response = client_for("admin").post("/api/grants/", body, content_type="application/json")
    assert response.status_code == status, response.json()
    assert not Grant.objects.exists()


def test_department_quota_api(client_for, department):
    c = client_for("admin")
    assert (
        c.put("/api/departments/radiology/quota/", {"tokens_per_day": 100000}, content_type="application/json").json()[
            "tokens_per_day"
        ]
        == 100000
    )
    bad = c.put("/api/departments/radiology/quota/", {"tokens_per_day": -1}, content_type="application/json")
    assert bad.status_code == 400 and "tokens_per_day" in _errors(bad)
    assert c.get("/api/departments/radiology/quota/").json()["tokens_per_day"] == 100000
    for field in ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "tokens_per_month"):
        huge = c.put("/api/departments/radiology/quota/", {field: 10**20}, content_type="application/json")
        assert huge.status_code == 400 and field in _errors(huge), huge.content  # not a 500 from the column
    assert c.get("/api/departments/radiology/quota/").json()["tokens_per_day"] == 100000
    assert client_for("dept_user").get("/api/departments/radiology/quota/").status_code == 403
    assert _events("department.quota") == 1


def _usage_rows(people, department, n: int) -> None:
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                created_at=now - timedelta(hours=i),
                user=people["dept_user"] if i % 2 else people["admin"],
                department=department if i % 2 else None,
                model="llama-a",
                endpoint="chat",
                status=200,
                prompt_tokens=10,
                completion_tokens=5,
                latency_ms=12.5,
                input_sha256="0" * 64,
                request_id=secrets.token_hex(8),  # one row per call: ids are unique
            )
            for i in range(n)
        ]
    )


def test_usage_scopes_filters_and_csv(client_for, people, department):
    _usage_rows(people, department, 10)
    mine = client_for("dept_user").get("/api/usage/").json()
    assert mine["count"] == 5 and {r["user"] for r in mine["results"]} == {"dept_user"}
    assert client_for("dept_user").get("/api/usage/?scope=department").json()["count"] == 5
    assert client_for("dept_user").get("/api/usage/?scope=all").status_code == 400
    assert client_for("auditor").get("/api/usage/").json()["count"] == 10
    assert client_for("admin").get("/api/usage/?department=radiology").json()["count"] == 5
    summary = client_for("admin").get("/api/usage/summary/").json()
    assert (
        summary["requests"] == 10 and summary["prompt_tokens"] == 100 and summary["by_model"][0]["model"] == "llama-a"
    )
    csv_body = b"".join(client_for("admin").get("/api/usage/?export=csv").streaming_content).decode()
    assert csv_body.splitlines()[0].startswith("created_at,user,department") and len(csv_body.splitlines()) == 11
    page_csv = client_for("dept_user").get("/usage.csv")
    assert len(b"".join(page_csv.streaming_content).decode().splitlines()) == 6


@pytest.mark.parametrize(
    "query, field",
    [
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("since=2026-11-02&until=2026-11-01", "since"),
        ("scope=everyone", "scope"),
    ],
)
def test_bad_usage_filters_are_400(client_for, query, field):
    response = client_for("admin").get(f"/api/usage/?{query}")
    assert response.status_code == 400 and field in _errors(response), response.json()
    assert client_for("admin").get(f"/usage/?{query}").status_code == 400


def test_list_pages_have_constant_query_counts(client_for, people, models, department):
    admin, user = people["admin"], people["dept_user"]

    def add(n: int) -> None:
        for _ in range(n):
            grant = grants.create_grant(admin, user=user, models=list(models.values()), duration_days=9)
            grants.create_key(user, grant=grant, name="k", models=[models["llama-a"]])
            AccessRequest.objects.create(
                requester=user, department=department, justification="x" * 10, duration_days=3
            ).models.set(models.values())
        _usage_rows(people, department, n)

    pages = [
        ("admin", "/api/access-requests/"),
        ("admin", "/api/grants/"),
        ("admin", "/api/api-keys/"),
        ("dept_user", "/api/api-keys/"),
        ("admin", "/access/grants/?show=all"),
        ("admin", "/access/keys/"),
        ("admin", "/access/queue/"),
        ("dept_user", "/access/"),
        ("admin", "/usage/"),
        ("admin", "/api/usage/"),
    ]

    def counts() -> list[int]:
        out = []
        for persona, url in pages:
            c = client_for(persona)
            with CaptureQueriesContext(connection) as ctx:
                assert c.get(url).status_code == 200, url
            out.append(len(ctx))
        return out

    add(2)
    few = counts()
    add(8)
    assert counts() == few


def test_pages_forms_and_roles(client_for, people, models):
    c = client_for("dept_user")
    page = c.get("/access/")
    assert page.status_code == 200 and "No grants yet" in page.content.decode()
    bad = c.post("/access/?form=request", {"justification": "short"})
    assert bad.status_code == 400 and not AccessRequest.objects.exists()
    ok = c.post(
        "/access/?form=request", {"models": ["llama-a"], "justification": "Triage notes for A&E", "duration_days": 14}
    )
    assert ok.status_code == 302 and AccessRequest.objects.get().state == "pending"
    pk = AccessRequest.objects.get().pk
    assert client_for("admin").post(f"/access/queue/{pk}/approve/", {"reason": "fine"}).status_code == 302
    grant = Grant.objects.get()
    created = c.post("/access/?form=key", {"name": "triage", "grant": grant.pk})
    body = created.content.decode()
    assert created.status_code == 201 and 'data-testid="new-key"' in body and "flk_" in body
    assert "flk_" + ApiKey.objects.get().prefix + "_" in body
    # The names she may call (the grant's, not a deployment's), each with code for it; and the
    # quota shown on her key is the one enforced, the grant's, though the key sets none.
    Grant.objects.filter(pk=grant.pk).update(tokens_per_minute=500)
    page = c.get("/access/").content.decode()
    assert 'tr data-model="llama-a"' in page and 'model="llama-a"' in page and "Not served yet" in page
    assert "http://testserver/v1/chat/completions" in page and 'data-copy-from="#python-1"' in page
    assert "500 tok/min" in page.split('data-testid="my-keys"')[1]
    assert c.post("/access/?form=key", {"name": "", "grant": grant.pk}).status_code == 400
    for persona, url, allowed in [
        ("dept_user", "/access/queue/", False),
        ("auditor", "/access/grants/", True),
        ("auditor", "/access/keys/", True),
        ("outsider", "/usage/", False),
        ("admin", "/access/", False),
        ("auditor", "/usage/", True),
    ]:
        assert (client_for(persona).get(url).status_code == 200) == allowed, (persona, url)


@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute", "tokens_per_day", "tokens_per_month"])
def test_a_limit_too_large_for_its_column_is_a_form_error_not_a_500(client_for, models, people, field):
    response = client_for("admin").post(
        "/access/grants/",
        {"user": people["dept_user"].pk, "models": ["llama-a"], "duration_days": 5, field: 10**20},
    )
    assert response.status_code == 400
    assert "Ensure this value is less than or equal to" in response.content.decode()
    assert not Grant.objects.exists()


def test_a_department_name_with_control_characters_is_refused_by_form_and_api(client_for, db):
    from access.people.models import Department

    client = client_for("admin")
    bad = "\x85\x17Radiology"  # schemathesis seed 1711042102 sent such a name, and it was stored
    api = client.post("/api/departments/", {"name": bad, "slug": "rad"}, content_type="application/json")
    assert api.status_code == 400 and "name" in api.json()["errors"]
    form = client.post("/people/", {"name": bad, "slug": "rad"})
    assert form.status_code in (200, 400) and not Department.objects.filter(slug="rad").exists()
    ok = client.post("/api/departments/", {"name": "Urología", "slug": "uro"}, content_type="application/json")
    assert ok.status_code == 201, ok.json()
