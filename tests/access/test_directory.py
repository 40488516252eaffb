"""Signing in with the organisation's directory: a real slapd (tests/slapd.py) over StartTLS, its
nested groups mapped to roles, refusals with their reason, and the sync that closes every door
of someone the directory disabled."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import ldap
import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_auth_ldap.config import LDAPSearch

from access.grants import services as grants
from access.people import directory
from access.people import services as people_services
from access.people.choices import Role, Source
from access.people.models import Department, DirectoryMapping, User
from audit.models import AuditEvent
from bench import mock_openai
from console.embedded import free_port
from tests import slapd
from tests.conftest import make_user
from tests.helpers import call_gateway


@pytest.fixture
def ldap_server(tmp_path) -> Iterator[slapd.Directory]:
    server = slapd.start(tmp_path / "slapd")
    yield server
    server.stop()


def _point_at(settings, uri: str, ca) -> None:
    settings.AUTH_LDAP_SERVER_URI = uri
    settings.AUTH_LDAP_START_TLS = True
    settings.AUTH_LDAP_BIND_DN, settings.AUTH_LDAP_BIND_PASSWORD = slapd.BIND_DN, slapd.BIND_PASSWORD
    settings.AUTH_LDAP_USER_SEARCH = LDAPSearch(slapd.PEOPLE, ldap.SCOPE_SUBTREE, "(uid=%(user)s)")
    settings.AUTH_LDAP_GROUP_SEARCH = LDAPSearch(slapd.GROUPS, ldap.SCOPE_SUBTREE, "(objectClass=groupOfNames)")
    settings.AUTH_LDAP_CONNECTION_OPTIONS = {
        ldap.OPT_NETWORK_TIMEOUT: 3,
        ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND,
        ldap.OPT_X_TLS_CACERTFILE: str(ca),
        ldap.OPT_X_TLS_NEWCTX: 0,
    }


@pytest.fixture
def mapped(db, ldap_server, settings, department) -> dict:
    """The directory configured, and its groups mapped: IT admins, auditors, and all staff (a
    nested group) as Radiology's department users."""
    _point_at(settings, ldap_server.uri, ldap_server.ca)
    radiology = department
    DirectoryMapping.objects.create(group=slapd.group_dn("it-admins"), role=Role.ADMIN)
    DirectoryMapping.objects.create(group=slapd.group_dn("auditors"), role=Role.AUDITOR)
    DirectoryMapping.objects.create(group=slapd.group_dn("staff"), role=Role.DEPT_USER, department=radiology)
    return {"server": ldap_server, "radiology": radiology}


def _sign_in(username: str, password: str = slapd.PASSWORD) -> tuple[Client, int]:
    client = Client()
    return client, client.post("/login/", {"username": username, "password": password}).status_code


def _failed(username: str) -> AuditEvent:
    return AuditEvent.objects.filter(action="auth.login_failed", context__username=username).get()


@pytest.mark.parametrize(
    ("username", "role", "slug"),
    [("alice", Role.ADMIN, None), ("erin", Role.AUDITOR, None), ("bob", Role.DEPT_USER, "radiology")],
)
def test_a_directory_user_signs_in_with_the_role_their_group_maps_to(mapped, username, role, slug):
    client, status = _sign_in(username)
    assert status == 302
    user = User.objects.get(username=username)
    assert (user.source, user.role, user.department and user.department.slug) == (Source.LDAP, role, slug)
    assert user.email == f"{username}@example.org" and not user.has_usable_password()
    assert client.get("/").status_code == 200
    login = AuditEvent.objects.get(action="auth.login", actor_name=username)
    assert login.context == {"method": "ldap", "role": role}


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("carol", slapd.PASSWORD, "in no mapped group"),
        ("dave", slapd.PASSWORD, "disabled in the directory"),
        ("alice", "not-her-password", "bad username or password"),
        ("nobody", slapd.PASSWORD, "bad username or password"),
    ],
)
def test_a_refused_sign_in_says_why_and_creates_nobody(mapped, username, password, reason):
    _client, status = _sign_in(username, password)
    assert status == 401
    assert not User.objects.filter(username=username).exists()
    event = _failed(username)
    assert event.context["reason"] == reason
    assert password not in str(event.as_dict())


def test_a_local_account_is_never_taken_over_by_a_directory_entry(mapped):
    local = make_user("alice", Role.AUDITOR)  # the break-glass account happens to share the name
    _client, status = _sign_in("alice")
    assert status == 401
    local.refresh_from_db()
    assert (local.source, local.role) == (Source.LOCAL, Role.AUDITOR)
    assert _failed("alice").context["reason"] == "a local account has this username"


def test_without_a_directory_local_accounts_sign_in_as_before(people, settings):
    assert settings.AUTH_LDAP_SERVER_URI == "" and not directory.enabled()
    _client, status = _sign_in("admin", "Fleet-test-passw0rd!")
    assert status == 302
    assert AuditEvent.objects.get(action="auth.login").context == {"method": "local", "role": Role.ADMIN}


def test_a_changed_mapping_counts_at_the_next_sign_in(mapped):
    _sign_in("bob")
    DirectoryMapping.objects.create(group=slapd.group_dn("radiology-staff"), role=Role.AUDITOR)
    _sign_in("bob")
    assert User.objects.get(username="bob").role == Role.AUDITOR  # auditor outranks department user


def _gateway_status(plaintext: str) -> int:
    return call_gateway("GET", "/v1/models", plaintext)[0]["status"]


@pytest.mark.django_db(transaction=True)
def test_the_sync_closes_every_door_of_someone_the_directory_disabled(ldap_server, settings):
    _point_at(settings, ldap_server.uri, ldap_server.ca)
    radiology = Department.objects.create(name="Radiology", slug="radiology")
    DirectoryMapping.objects.create(group=slapd.group_dn("staff"), role=Role.DEPT_USER, department=radiology)
    admin = make_user("it-admin", Role.ADMIN)
    browser, status = _sign_in("bob")
    assert status == 302
    bob = User.objects.get(username="bob")
    _token, token = people_services.create_token(bob, name="nightly", expires_in_days=None)
    deployment, _ = mock_openai.register("chat-sync", free_port())
    grant = grants.create_grant(admin, user=bob, models=[deployment.model], duration_days=1)
    _key, key = grants.create_key(bob, grant=grant, name="k")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get("/api/tokens/").status_code == 200 and _gateway_status(key) == 200

    ldap_server.lock("bob")
    result = directory.sync()

    assert result.deactivated == ["bob"] and result.error == ""
    bob.refresh_from_db()
    assert not bob.is_active and bob.deactivated_reason == "directory: disabled in the directory"
    assert browser.get("/").status_code == 302  # the session ended: back to the sign-in page
    assert api.get("/api/tokens/").status_code == 401
    assert _gateway_status(key) == 401
    change = AuditEvent.objects.filter(action="user.update", target_id=str(bob.pk)).latest("seq")
    assert change.after == {"is_active": False, "deactivated_reason": "directory: disabled in the directory"}
    assert change.channel == "directory"
    run = AuditEvent.objects.filter(action="directory.sync").latest("seq")
    assert run.after["deactivated"] == ["bob"]
    _client, status = _sign_in("bob")
    assert status == 401


def test_the_sync_follows_the_groups_and_lets_back_whom_the_directory_restores(mapped):
    _sign_in("bob")
    mapped["server"].modify(
        # a groupOfNames needs a member: radiology-staff's place goes to someone else
        f"dn: {slapd.group_dn('staff')}\nchangetype: modify\nreplace: member\nmember: {slapd.person_dn('carol')}\n"
    )
    assert directory.sync().deactivated == ["bob"]
    assert User.objects.get(username="bob").deactivated_reason == "directory: in no mapped group"
    mapped["server"].modify(
        f"dn: {slapd.group_dn('auditors')}\nchangetype: modify\nadd: member\nmember: {slapd.person_dn('bob')}\n"
    )
    assert directory.sync().changed == ["bob"]
    bob = User.objects.get(username="bob")
    assert bob.is_active and bob.role == Role.AUDITOR and bob.department is None


def test_an_admins_deactivation_is_not_undone_by_the_directory(mapped):
    _sign_in("alice")
    alice = User.objects.get(username="alice")
    people_services.deactivate(alice, "left the IT team (by it-lead)")
    assert directory.sync().changed == []
    _client, status = _sign_in("alice")
    assert status == 401 and not User.objects.get(username="alice").is_active


def test_an_unreachable_directory_deactivates_nobody(mapped, settings):
    _sign_in("alice")
    mapped["server"].stop()
    result = directory.sync()
    assert result.error and result.deactivated == [] and User.objects.get(username="alice").is_active
    failed = AuditEvent.objects.get(action="directory.sync_failed")
    assert failed.after["error"] and slapd.BIND_PASSWORD not in str(failed.as_dict())


def test_admins_map_groups_on_a_page_and_bad_mappings_are_refused_beside_their_field(client_for, department):
    admin = client_for("admin")
    assert "No directory is configured" in admin.get("/people/directory/").content.decode()
    response = admin.post(
        "/people/directory/", {"provider": "ldap", "group": "CN=Staff,OU=Groups,DC=example,DC=org", "role": "dept_user"}
    )
    assert response.status_code == 400 and "needs a department" in response.content.decode()
    assert not DirectoryMapping.objects.exists()
    ok = {
        "provider": "ldap",
        "group": " CN=Staff,OU=Groups,DC=example,DC=org ",
        "role": "dept_user",
        "department": department.pk,
    }
    assert admin.post("/people/directory/", ok).status_code == 302
    mapping = DirectoryMapping.objects.get()
    assert mapping.group == "cn=staff,ou=groups,dc=example,dc=org"  # as the directory compares them
    again = admin.post("/people/directory/", ok)
    assert again.status_code == 400 and "already exists" in again.content.decode()
    assert AuditEvent.objects.filter(action="directory_mapping.create").count() == 1
    page = admin.get("/people/directory/").content.decode()
    assert "cn=staff,ou=groups,dc=example,dc=org" in page and "Radiology" in page
    assert client_for("dept_user").get("/people/directory/").status_code == 403
    assert admin.post(f"/people/directory/{mapping.pk}/delete/").status_code == 302
    assert not DirectoryMapping.objects.exists()


def test_the_sync_runs_on_demand_and_says_what_it_did(mapped, capsys):
    _sign_in("alice")
    mapped["server"].lock("alice")
    call_command("sync_directory")
    assert "deactivated alice" in capsys.readouterr().out
    mapped["server"].stop()
    with pytest.raises(CommandError, match="nobody was changed"):
        call_command("sync_directory")


def test_someone_in_no_mapped_group_is_told_so_on_the_sign_in_page(mapped):
    page = Client().post("/login/", {"username": "carol", "password": slapd.PASSWORD})
    assert page.status_code == 401 and "not in any group that gives access" in page.content.decode()
    locked = Client().post("/login/", {"username": "dave", "password": "a-guess"}).content.decode()
    assert "didn't match" in locked and "disabled" not in locked  # a guesser learns nothing of the account


def test_with_a_directory_the_local_admins_are_flagged_on_the_dashboard(mapped, client_for):
    page = client_for("admin").get("/").content.decode()
    assert 'data-testid="break-glass"' in page and "break-glass): admin" in page
    _sign_in("alice")  # a directory admin is not one
    assert "alice" not in client_for("admin").get("/").content.decode().split('data-testid="break-glass"')[1][:300]


def test_a_break_glass_admin_signs_in_while_the_directory_hangs(mapped, people, settings):
    with socket.socket() as silent:  # takes connections and never answers: a directory that hangs
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings.AUTH_LDAP_SERVER_URI = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        _client, status = _sign_in("admin", "Fleet-test-passw0rd!")
        assert status == 302 and time.monotonic() - started < 2  # local accounts come first
