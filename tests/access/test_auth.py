"""Sign-in: wrong password, lockout, session cookie flags."""

from __future__ import annotations

from audit.models import AuditEvent
from tests.conftest import PASSWORD


def test_it_refuses_a_wrong_password_with_401_and_a_message(people, client):
    response = client.post("/login/", {"username": "admin", "password": "not-it"})
    assert response.status_code == 401
    assert "didn't match" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_signs_in_and_out(people, client):
    response = client.post("/login/", {"username": "dept_user", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_it_locks_out_after_repeated_failures(people, client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.post("/login/", {"username": "auditor", "password": "bad"}).status_code == 401
    locked = client.post("/login/", {"username": "auditor", "password": "bad"})
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    # even the right password is refused while locked out
    assert client.post("/login/", {"username": "auditor", "password": PASSWORD}).status_code == 429
    assert AuditEvent.objects.filter(action="auth.lockout").count() >= 1
    # another account from the same address is not locked
    assert client.post("/login/", {"username": "admin", "password": PASSWORD}).status_code == 302


def test_it_refuses_logout_by_get(people, client_for):
    assert client_for("admin").get("/logout/").status_code == 405


def test_unknown_pages_answer_404_not_500(client_for):
    response = client_for("admin").get("/no/such/page/")
    assert response.status_code == 404 and "There is nothing at this address" in response.content.decode()


def test_every_response_carries_a_request_id(client):
    response = client.get("/login/")
    assert len(response["X-Request-ID"]) == 32
    echoed = client.get("/login/", HTTP_X_REQUEST_ID="trace-abcdef-1234")
    assert echoed["X-Request-ID"] == "trace-abcdef-1234"
    injected = client.get("/login/", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert injected["X-Request-ID"] != "bad id\nwith newline" and len(injected["X-Request-ID"]) == 32


def test_healthz_reports_database_redis_and_the_ledger(db, client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["database"] == "ok" and health["redis"] == "ok"
    assert health["ledger"]["state"] == "ok" and health["ledger"]["backlog"] >= 0
    assert client.get("/readyz").json() == {"ready": True, "database": "ok", "redis": "ok"}
