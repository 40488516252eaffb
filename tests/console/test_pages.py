"""UI forms and lists: bad input, pagination, constant query counts."""

from __future__ import annotations

import logging

from django.db import connection
from django.test.utils import CaptureQueriesContext

from access.people import services
from access.people.choices import Role
from access.people.models import Department, PersonalToken
from audit.models import AuditEvent
from tests.conftest import make_user


def _queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(path).status_code == 200
    return len(ctx.captured_queries)


def test_people_page_query_count_is_constant(client_for, department):
    client = client_for("admin")
    few = _queries(client, "/people/")
    for i in range(30):
        make_user(f"user{i:02}", Role.DEPT_USER, Department.objects.create(name=f"D{i}", slug=f"d{i}"))
    assert _queries(client, "/people/") == few


def test_audit_trail_query_count_is_constant(client_for, people):
    client = client_for("auditor")
    _queries(client, "/audit/")  # the action suggestions are cached after the first view
    few = _queries(client, "/audit/")
    for i in range(60):
        make_user(f"user{i:02}", Role.AUDITOR)
    assert _queries(client, "/audit/") == few
    assert _queries(client, "/") == _queries(client, "/")


def test_people_page_searches_filters_and_pages(client_for, department):
    client = client_for("admin")
    for i in range(30):
        make_user(f"nurse{i:02}", Role.DEPT_USER, department)
    body = client.get("/people/?q=nurse0&role=dept_user&department=radiology").content.decode()
    assert (
        "nurse05" in body and "nurse15" not in body and "dept_user" not in body.split("<tbody>")[1].split("</tbody>")[0]
    )
    page2 = client.get("/people/?page=2").content.decode()
    assert "Page 2 of 2" in page2


def test_department_form_refuses_bad_input(client_for, department):
    client = client_for("admin")
    response = client.post("/people/", {"name": "Radiology", "slug": "rad2"})
    assert response.status_code == 400 and "already exists" in response.content.decode()
    response = client.post("/people/", {"name": "Lab", "slug": "not a slug"})
    assert response.status_code == 400
    assert Department.objects.count() == 1
    response = client.post("/people/", {"name": "Lab", "slug": "lab", "description": ""})
    assert response.status_code == 302 and Department.objects.filter(slug="lab").exists()


def test_a_department_gets_its_short_name_from_its_name_when_left_empty(client_for, department):
    client = client_for("admin")
    assert client.post("/people/", {"name": "Intensive Care", "slug": ""}).status_code == 302
    assert Department.objects.filter(name="Intensive Care", slug="intensive-care").exists()
    api = client.post("/api/departments/", {"name": "Nuclear Medicine"}, content_type="application/json")
    assert api.status_code == 201 and api.json()["slug"] == "nuclear-medicine"
    nothing_to_make = client.post("/api/departments/", {"name": "—"}, content_type="application/json")
    assert nothing_to_make.status_code == 409 and "slug" in nothing_to_make.json()["errors"]
    assert not Department.objects.filter(name="—").exists()


def test_token_page_shows_the_token_once(client_for, people):
    client = client_for("dept_user")
    response = client.post("/account/tokens/", {"name": "ci job", "expires_in_days": "90"})
    assert response.status_code == 201
    token = PersonalToken.objects.get(user=people["dept_user"])
    body = response.content.decode()
    assert 'data-testid="new-token"' in body and f"fct_{token.prefix}_" in body
    assert (
        f"fct_{token.prefix}_" in body
        and 'data-testid="new-token"' not in client.get("/account/tokens/").content.decode()
    )
    assert client.post("/account/tokens/", {"name": "", "expires_in_days": "90"}).status_code == 400
    assert client.post("/account/tokens/", {"name": "x", "expires_in_days": "7"}).status_code == 400
    assert PersonalToken.objects.count() == 1
    revoke = client.post(f"/account/tokens/{token.pk}/revoke/")
    assert revoke.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.filter(action__in=["token.create", "token.revoke"]).count() == 2


def test_a_user_cannot_revoke_someone_elses_token(client_for, people):
    token, _ = services.create_token(people["admin"], name="mine", expires_in_days=None)
    assert client_for("dept_user").post(f"/account/tokens/{token.pk}/revoke/").status_code == 404
    assert client_for("dept_user").get(f"/account/tokens/{token.pk}/revoke/").status_code == 405


def test_audit_trail_filter_errors_are_400(client_for, people):
    response = client_for("auditor").get("/audit/?since=notadate")
    assert response.status_code == 400 and "use a date like" in response.content.decode()


def test_a_refused_request_logs_one_line_without_a_traceback(client_for, caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert client_for("dept_user").get("/nodes/").status_code == 403
        assert client_for("dept_user").get("/api/nodes/").status_code == 403
    refused = [r for r in caplog.records if r.name == "django.request" and getattr(r, "status_code", None) == 403]
    assert refused and all(r.exc_info is None for r in refused), [r.exc_info for r in refused]
