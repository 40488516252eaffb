"""The role × page matrix: each persona reaches only its pages and API endpoints."""

from __future__ import annotations

import pytest

ALL = {"admin", "dept_user", "auditor", "outsider"}
WITH_ROLE = {"admin", "dept_user", "auditor"}

# path, personas allowed (200); everyone else signed in gets 403 (Django admin: 302 to its login)
UI_PAGES = [
    ("/", ALL),
    ("/people/", {"admin"}),
    ("/audit/", {"admin", "auditor"}),
    ("/account/tokens/", WITH_ROLE),
    ("/nodes/", {"admin"}),
    ("/nodes/join/", {"admin"}),
    ("/models/", {"admin"}),
    ("/models/fit/", {"admin"}),
    ("/deployments/", {"admin"}),
    ("/admin/", {"admin"}),
    ("/admin/access/user/", {"admin"}),
]
API_ENDPOINTS = [
    ("/api/me/", ALL),
    ("/api/users/", {"admin"}),
    ("/api/departments/", {"admin"}),
    ("/api/tokens/", WITH_ROLE),
    ("/api/audit/events/", {"admin", "auditor"}),
    ("/api/audit/verify/", {"admin", "auditor"}),
    ("/api/nodes/", {"admin"}),
    ("/api/join-tokens/", {"admin"}),
    ("/api/models/", {"admin"}),
    ("/api/deployments/", {"admin"}),
    ("/api/schema/", WITH_ROLE),
    ("/api/docs/", WITH_ROLE),  # Swagger UI: HTML, so its refusals are HTML too
]


def _accept(path: str) -> str:
    return "text/html" if path.endswith("/docs/") else "application/json"


@pytest.mark.parametrize("persona", sorted(ALL))
@pytest.mark.parametrize("path,allowed", UI_PAGES)
def test_it_shows_ui_pages_only_to_their_roles(client_for, persona, path, allowed):
    response = client_for(persona).get(path)
    if persona in allowed:
        assert response.status_code == 200, (persona, path)
    elif path.startswith("/admin/"):
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    else:
        assert response.status_code == 403, (persona, path)


@pytest.mark.parametrize("persona", sorted(ALL))
@pytest.mark.parametrize("path,allowed", API_ENDPOINTS)
def test_it_serves_api_endpoints_only_to_their_roles(client_for, persona, path, allowed):
    response = client_for(persona).get(path, HTTP_ACCEPT=_accept(path))
    assert response.status_code == (200 if persona in allowed else 403), (persona, path)
    if response.status_code == 403 and _accept(path) == "application/json":
        assert response.json()["status"] == 403 and response.json()["detail"]


@pytest.mark.parametrize("path,_allowed", UI_PAGES)
def test_it_sends_anonymous_visitors_to_sign_in(client_for, path, _allowed):
    response = client_for(None).get(path)
    assert response.status_code == 302
    assert "login/" in response["Location"]


@pytest.mark.parametrize("path,_allowed", API_ENDPOINTS)
def test_it_answers_anonymous_api_calls_with_401(client_for, path, _allowed):
    response = client_for(None).get(path, HTTP_ACCEPT=_accept(path))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    if _accept(path) == "application/json":
        assert response.json() == {"detail": "Authentication credentials were not provided.", "status": 401}


@pytest.mark.parametrize(
    "persona,marker",
    [
        ("admin", "admin-home"),
        ("dept_user", "dept-home"),
        ("auditor", "auditor-home"),
        ("outsider", "no-role-home"),
    ],
)
def test_it_gives_each_persona_its_own_home(client_for, persona, marker):
    body = client_for(persona).get("/").content.decode()
    assert f'data-testid="{marker}"' in body
    for other in {"admin-home", "dept-home", "auditor-home", "no-role-home"} - {marker}:
        assert other not in body


def test_it_shows_navigation_per_role(client_for):
    dept = client_for("dept_user").get("/").content.decode()
    assert "/people/" not in dept and "/audit/" not in dept and "/account/tokens/" in dept
    admin = client_for("admin").get("/").content.decode()
    assert "/people/" in admin and "/audit/" in admin and "/admin/" in admin
