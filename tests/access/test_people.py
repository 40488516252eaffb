"""People managed in the console, never through Django admin: local accounts with a one-time
set-password link, role and department changes, deactivation that closes every door, resets."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

from access.grants import services as grants
from access.people.choices import Role, Source
from access.people.models import User
from audit.models import AuditEvent
from fleet.catalog.models import ModelArtifact
from tests.conftest import PASSWORD, make_user

NEW_PASSWORD = "Another-long-passw0rd!"


def _link(response) -> str:
    found = re.search(
        r'id="password-link-text">https?://[^/]+(/account/set-password/[^<]+)<', response.content.decode()
    )
    assert found, response.content.decode()[:2000]
    return found.group(1)


def _set_password(path: str, password: str = NEW_PASSWORD) -> Client:
    client = Client()
    form = client.get(path, follow=True)  # Django moves the token out of the URL into the session
    assert form.status_code == 200 and "Choose your password" in form.content.decode()
    done = client.post(form.redirect_chain[-1][0], {"new_password1": password, "new_password2": password})
    assert done.status_code == 302 and done["Location"] == "/login/?password=set"
    return client


def test_an_admin_adds_a_local_user_who_sets_their_own_password_once(client_for, department):
    admin = client_for("admin")
    assert "Add a user" in admin.get("/people/").content.decode()
    body = {"username": "nina", "email": "nina@example.org", "role": "dept_user", "department": department.pk}
    response = admin.post("/people/new/", body)
    assert response.status_code == 201
    nina = User.objects.get(username="nina")
    assert (nina.source, nina.role, nina.has_usable_password()) == (Source.LOCAL, Role.DEPT_USER, False)
    assert AuditEvent.objects.filter(action="user.create", target_id=str(nina.pk)).count() == 1
    path = _link(response)
    assert len(mail.outbox) == 0  # no SMTP configured: the admin was shown the link instead
    _set_password(path)
    assert Client().post("/login/", {"username": "nina", "password": NEW_PASSWORD}).status_code == 302
    used = Client().get(path, follow=True)
    assert 'data-testid="link-used"' in used.content.decode()  # the link works once


def test_with_smtp_configured_the_link_is_emailed_not_shown(client_for, settings):
    settings.EMAIL_HOST = "smtp.example.org"
    response = client_for("admin").post(
        "/people/new/", {"username": "omar", "email": "omar@example.org", "role": "auditor"}
    )
    assert response.status_code == 201 and 'data-testid="password-link-emailed"' in response.content.decode()
    assert "set-password" not in response.content.decode()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["omar@example.org"]
    path = re.search(r"https?://[^/]+(/account/set-password/\S+)", mail.outbox[0].body).group(1)
    _set_password(path)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"username": "p", "role": "dept_user"}, "department", "must belong to a department"),
        ({"username": "admin", "role": "auditor"}, "username", "already exists"),
        ({"username": "bad name!", "role": "auditor"}, "username", "Enter a valid username"),
        ({"username": "q", "role": "emperor"}, "role", "not one of the available choices"),
        ({"username": "r", "role": "auditor", "email": "not-an-address"}, "email", "valid email"),
    ],
)
def test_a_bad_new_user_is_refused_beside_its_field_and_nothing_is_written(client_for, body, field, message):
    count = User.objects.count()
    response = client_for("admin").post("/people/new/", body)
    assert response.status_code == 400 and message in response.content.decode()
    assert User.objects.count() == count


def test_the_person_page_shows_grants_keys_tokens_and_last_sign_in(client_for, people):
    user = people["dept_user"]
    Client().post("/login/", {"username": "dept_user", "password": PASSWORD})
    model = ModelArtifact.objects.create(name="llama-x", path="/models/llama-x")
    grant = grants.create_grant(people["admin"], user=user, models=[model], duration_days=5)
    grants.create_key(user, grant=grant, name="notebook")
    page = client_for("admin").get(f"/people/{user.pk}/").content.decode()
    assert (
        "llama-x" in page
        and "notebook" in page
        and "Local account" in page
        and "never" not in page.split("Last sign-in")[1][:80]
    )
    assert client_for("auditor").get(f"/people/{user.pk}/").status_code == 403


def test_changing_a_role_needs_a_department_for_department_users(client_for, people):
    auditor = people["auditor"]
    response = client_for("admin").post(f"/people/{auditor.pk}/", {"role": "dept_user", "email": auditor.email})
    assert response.status_code == 400 and "must belong to a department" in response.content.decode()
    assert User.objects.get(pk=auditor.pk).role == Role.AUDITOR
    ok = client_for("admin").post(f"/people/{auditor.pk}/", {"role": "admin", "email": auditor.email})
    assert ok.status_code == 302 and User.objects.get(pk=auditor.pk).role == Role.ADMIN


def test_deactivating_closes_every_door_and_reactivating_opens_them(client_for, people):
    user = people["dept_user"]
    browser = Client()
    browser.post("/login/", {"username": "dept_user", "password": PASSWORD})
    token = client_for("dept_user").post("/api/tokens/", {"name": "cron"}, content_type="application/json").json()
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token['token']}")
    assert api.get("/api/tokens/").status_code == 200 and browser.get("/").status_code == 200
    admin = client_for("admin")
    assert admin.post(f"/people/{user.pk}/deactivate/").status_code == 302
    user.refresh_from_db()
    assert not user.is_active and user.deactivated_reason == "by admin"
    assert browser.get("/").status_code == 302 and api.get("/api/tokens/").status_code == 401
    assert Client().post("/login/", {"username": "dept_user", "password": PASSWORD}).status_code == 401
    assert "Deactivated (by admin)" in admin.get(f"/people/{user.pk}/").content.decode()
    assert admin.post(f"/people/{user.pk}/reactivate/").status_code == 302
    assert api.get("/api/tokens/").status_code == 200
    events = AuditEvent.objects.filter(action="user.update", target_id=str(user.pk)).order_by("seq")
    assert [e.after["is_active"] for e in events] == [False, True]


def test_an_admin_cannot_deactivate_themselves(client_for, people):
    response = client_for("admin").post(f"/people/{people['admin'].pk}/deactivate/", follow=True)
    assert "You cannot change your own role or deactivate yourself" in response.content.decode()
    assert User.objects.get(pk=people["admin"].pk).is_active


def test_deactivating_through_the_api_ends_sessions_too(client_for, people):
    browser = Client()
    browser.post("/login/", {"username": "auditor", "password": PASSWORD})
    response = client_for("admin").patch(
        f"/api/users/{people['auditor'].pk}/", {"is_active": False}, content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert browser.get("/").status_code == 302
    assert User.objects.get(pk=people["auditor"].pk).deactivated_reason == "by admin"


def test_a_password_reset_stops_the_old_password_and_gives_a_new_link(client_for, people):
    browser = Client()
    browser.post("/login/", {"username": "auditor", "password": PASSWORD})
    response = client_for("admin").post(f"/people/{people['auditor'].pk}/reset-password/")
    assert response.status_code == 200
    assert browser.get("/").status_code == 302  # signed out everywhere
    assert Client().post("/login/", {"username": "auditor", "password": PASSWORD}).status_code == 401
    _set_password(_link(response))
    assert Client().post("/login/", {"username": "auditor", "password": NEW_PASSWORD}).status_code == 302


def test_a_directory_account_is_reset_in_the_directory(client_for, people):
    person = make_user("dana", Role.AUDITOR)
    User.objects.filter(pk=person.pk).update(source=Source.LDAP)
    response = client_for("admin").post(f"/people/{person.pk}/reset-password/", follow=True)
    assert "their password is reset there" in response.content.decode()


@pytest.mark.parametrize("name", ["𝓣𝓱𝓮 𝓺𝓾𝓲𝓬𝓴", "café"])
def test_a_token_name_is_ascii_as_its_documented_pattern_says(client_for, name):
    response = client_for("auditor").post("/api/tokens/", {"name": name}, content_type="application/json")
    assert response.status_code == 400 and "name" in response.json()["errors"]
    ok = client_for("auditor").post("/api/tokens/", {"name": "nightly-export 2"}, content_type="application/json")
    assert ok.status_code == 201
