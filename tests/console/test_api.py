"""REST API: JSON errors, tokens, bad input that loses nothing."""

from __future__ import annotations

import pytest
from django.test import Client

from access.people.models import Department, PersonalToken, User
from audit.models import AuditEvent


def test_malformed_json_gets_a_400_that_says_so(client_for):
    response = client_for("admin").post("/api/departments/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["status"] == 400 and "JSON parse error" in response.json()["detail"]


def test_unknown_api_url_gets_a_json_404(client_for):
    response = client_for("admin").get("/api/nothing-here/")
    assert response.status_code == 404
    assert response.json() == {"detail": "There is nothing at this address. Check it, or go back home.", "status": 404}


def test_unknown_object_gets_a_json_404(client_for):
    response = client_for("admin").get("/api/departments/999999/")
    assert response.status_code == 404 and response.json()["status"] == 404


@pytest.mark.parametrize(
    "payload,field,status",
    [
        ({"name": "", "slug": "x"}, "name", 400),
        ({"name": "Cardiology", "slug": "not a slug!"}, "slug", 400),
        ({"name": "Radiology", "slug": "radiology-2"}, "name", 409),  # well formed, but the name is taken
    ],
)
def test_bad_department_input_is_refused_and_nothing_written(client_for, department, payload, field, status):
    client = client_for("admin")
    count, events = Department.objects.count(), AuditEvent.objects.count()
    response = client.post("/api/departments/", payload, content_type="application/json")
    assert response.status_code == status
    assert field in response.json()["errors"]
    assert (Department.objects.count(), AuditEvent.objects.count()) == (count, events)


@pytest.mark.parametrize(
    "payload,field,status",
    [
        ({"username": "newbie", "role": "dept_user", "password": "Sufficiently-long-pass-1"}, "department", 400),
        ({"username": "newbie", "role": "auditor", "password": "short"}, "password", 400),
        ({"username": "newbie", "role": "auditor"}, "password", 400),
        ({"username": "newbie", "role": "wizard", "password": "Sufficiently-long-pass-1"}, "role", 400),
        ({"username": "admin", "role": "auditor", "password": "Sufficiently-long-pass-1"}, "username", 409),  # taken
    ],
)
def test_bad_user_input_is_refused_and_nothing_written(client_for, payload, field, status):
    client = client_for("admin")
    users, events = User.objects.count(), AuditEvent.objects.count()
    response = client.post("/api/users/", payload, content_type="application/json")
    assert response.status_code == status, response.json()
    assert field in response.json()["errors"]
    assert (User.objects.count(), AuditEvent.objects.count()) == (users, events)


def test_admin_creates_a_user_and_the_password_is_hashed(client_for, department):
    response = client_for("admin").post(
        "/api/users/",
        {
            "username": "newbie",
            "role": "dept_user",
            "department": "radiology",
            "password": "Sufficiently-long-pass-1",
        },
        content_type="application/json",
    )
    assert response.status_code == 201 and "password" not in response.json()
    user = User.objects.get(username="newbie")
    assert user.check_password("Sufficiently-long-pass-1") and "Sufficiently" not in user.password
    event = AuditEvent.objects.get(action="user.create", target_id=str(user.pk))
    assert "password" not in event.after and event.actor_name == "admin"


def test_a_department_with_members_cannot_be_deleted(client_for, department):
    response = client_for("admin").delete(f"/api/departments/{department.pk}/")
    assert response.status_code == 409 and "members" in response.json()["detail"]
    assert Department.objects.filter(pk=department.pk).exists()


def test_personal_token_lifecycle(client_for, people):
    client = client_for("auditor")
    created = client.post(
        "/api/tokens/", {"name": "nightly export", "expires_in_days": 30}, content_type="application/json"
    )
    assert created.status_code == 201
    plaintext = created.json()["token"]
    assert plaintext.startswith("fct_")
    row = PersonalToken.objects.get(pk=created.json()["id"])
    assert plaintext not in row.digest and len(row.digest) == 64
    assert plaintext not in str(list(AuditEvent.objects.values()))

    bearer = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    me = bearer.get("/api/me/")
    assert me.status_code == 200 and me.json()["username"] == "auditor"
    assert bearer.get("/api/users/").status_code == 403  # a token carries its user's role, no more
    assert "token" not in client.get("/api/tokens/").json()["results"][0]

    assert client.delete(f"/api/tokens/{row.pk}/").status_code == 204
    revoked = bearer.get("/api/me/")
    assert revoked.status_code == 401 and revoked.json()["detail"] == "This token was revoked."
    assert client.delete(f"/api/tokens/{row.pk}/").status_code == 409


@pytest.mark.parametrize("header", ["Bearer fct_nope", "Bearer fct_aaaaaaaaaaaa_wrongsecret", "Bearer a b"])
def test_bad_tokens_get_401(db, header):
    response = Client(HTTP_AUTHORIZATION=header).get("/api/me/")
    assert response.status_code == 401 and response.json()["status"] == 401


def test_token_input_is_validated(client_for):
    client = client_for("dept_user")
    for payload in ({"name": ""}, {"name": "x", "expires_in_days": 0}, {"name": "<script>"}):
        response = client.post("/api/tokens/", payload, content_type="application/json")
        assert response.status_code == 400 and response.json()["errors"]
    assert PersonalToken.objects.count() == 0


def test_audit_api_filters_and_pages(client_for, people):
    client = client_for("auditor")
    first = client.get("/api/audit/events/?action=user.create").json()
    assert {e["action"] for e in first["results"]} == {"user.create"} and first["next_before"] is None
    assert client.get("/api/audit/events/?since=yesterday").status_code == 400
    assert client.get("/api/audit/events/?before=abc").status_code == 400
    assert client.get("/api/audit/events/?before=0").status_code == 400
    # an empty window (since after until) answers nothing, but a bad cursor is still refused
    assert client.get("/api/audit/events/?since=2026-02-01&until=2026-01-01&before=false").status_code == 400
    assert client.get("/api/audit/events/?before=").status_code == 200  # blank, as documented: the first page
    parameter = next(
        p
        for p in client.get("/api/schema/?format=json").json()["paths"]["/api/audit/events/"]["get"]["parameters"]
        if p["name"] == "before"
    )
    assert {"type": "string", "maxLength": 0} in parameter["schema"]["anyOf"]
    assert client.get("/api/audit/verify/").json()["ok"] is True


def test_openapi_schema_describes_the_api(client_for):
    schema = client_for("admin").get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert {"/api/me/", "/api/users/", "/api/departments/", "/api/tokens/", "/api/audit/events/"} <= set(
        schema["paths"]
    )
