"""Audit core: what an event holds, the chain, tamper detection, append-only, concurrency."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connections, transaction

import audit
from access.people.choices import Role
from access.people.models import Department, User
from audit import context as audit_context
from audit.chain import GENESIS, event_hash, verify
from audit.models import AuditEvent
from tests.conftest import PASSWORD
from tests.helpers import tamper


@pytest.fixture
def three_events(people):
    # the personas' creation already wrote events; add three known ones at the end
    for i in range(3):
        audit.record(people["admin"], "test.step", people["dept_user"], before={"n": i}, after={"n": i + 1})
    return list(AuditEvent.objects.order_by("seq"))


def test_it_records_who_what_where(people, department):
    admin = people["dept_user"]
    with audit_context.bound(source_ip="10.1.2.3", request_id="req-12345678", channel="web"):
        event = audit.record(admin, "model.deploy", department, before={"a": 1}, after={"a": 2}, reason="test")
    assert event.actor_name == "dept_user" and event.actor_role == Role.DEPT_USER
    assert event.actor_department == "Radiology"
    assert (event.source_ip, event.request_id, event.channel) == ("10.1.2.3", "req-12345678", "web")
    assert (event.target_type, event.target_id, event.target_repr) == (
        "access.department",
        str(department.pk),
        "Radiology",
    )
    assert event.context == {"reason": "test"}
    previous = AuditEvent.objects.get(seq=event.seq - 1)
    assert event.prev_hash == previous.hash and event.hash == event_hash(event.as_dict())


def test_it_never_stores_secrets(people):
    event = audit.record(
        people["admin"], "test.secret", None, after={"password": "hunter2", "nested": {"api_key": "k"}}, token="fct_x"
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert "hunter2" not in str(stored.as_dict()) and "fct_x" not in str(stored.as_dict())
    assert stored.after == {"password": "[redacted]", "nested": {"api_key": "[redacted]"}}


@pytest.mark.parametrize(
    "key,secret",
    [
        ("password", True),
        ("new_password1", True),
        ("join_token", True),
        ("agent_digest", True),
        ("apikey", True),
        ("Authorization", True),
        ("credential", True),
        ("prompt_tokens", False),
        ("completion_tokens", False),
        ("max_tokens", False),
        ("key_prefix", False),
        ("input_sha256", False),
        ("tokens_per_minute", False),
    ],
)
def test_secrets_are_redacted_by_name_not_by_substring(people, key, secret):
    event = audit.record(people["admin"], "test.redaction", None, after={key: 42})
    assert AuditEvent.objects.get(pk=event.pk).after == {key: "[redacted]" if secret else 42}


def test_it_verifies_an_intact_chain(three_events):
    result = verify()
    assert result.ok and result.checked == len(three_events) == result.intact_up_to
    assert three_events[0].prev_hash == GENESIS
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert f"intact up to event {three_events[-1].seq}" in out.getvalue()


def test_it_names_an_event_altered_in_sql(three_events):
    victim = three_events[1]
    tamper("UPDATE audit_auditevent SET actor_name = 'someone-else' WHERE seq = %s", [victim.seq])
    with pytest.raises(CommandError, match=rf"BROKEN at event {victim.seq}: content does not match its hash"):
        call_command("audit_verify")


def test_it_names_the_event_after_a_deleted_one(three_events):
    victim = three_events[1]
    tamper("DELETE FROM audit_auditevent WHERE seq = %s", [victim.seq])
    result = verify()
    assert not result.ok and result.broken_seq == victim.seq + 1 and "missing" in result.problem
    assert result.intact_up_to == victim.seq - 1


def test_it_names_an_inserted_event(three_events):
    # An insertion that keeps the numbering: renumber the tail and slip a forged event in.
    last = three_events[-1]
    tamper("UPDATE audit_auditevent SET seq = seq + 1000 WHERE seq = %s", [last.seq])
    forged = AuditEvent(**{f.name: getattr(last, f.name) for f in AuditEvent._meta.fields if f.name != "id"})
    forged.seq, forged.action, forged.hash = last.seq, "forged.action", "f" * 64
    tamper(
        "INSERT INTO audit_auditevent (seq, created_at, actor_name, actor_role, actor_department, action,"
        " target_type, target_id, target_repr, context, source_ip, request_id, channel, prev_hash, hash)"
        " VALUES (%s, now(), 'x', '', '', 'forged', '', '', '', '{}', '', '', '', %s, %s)",
        [last.seq, last.prev_hash, "f" * 64],
    )
    result = verify()
    assert not result.ok and result.broken_seq == last.seq and "altered" in result.problem


def test_the_database_refuses_update_and_delete(three_events):
    event = three_events[-1]
    for statement in (
        lambda: AuditEvent.objects.filter(pk=event.pk).update(action="changed"),
        lambda: AuditEvent.objects.filter(pk=event.pk).delete(),
    ):
        with pytest.raises(DatabaseError, match="append-only"):
            with transaction.atomic():
                statement()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.step"


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_writers_make_one_linear_chain():
    start = threading.Barrier(50)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            start.wait()
            audit.record(f"writer-{i}", "test.concurrent", None, n=i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 51))
    assert verify().ok
    assert sorted(e.context["n"] for e in AuditEvent.objects.all()) == list(range(50))


def test_it_records_login_logout_and_failed_login(people, client):
    assert client.post("/login/", {"username": "auditor", "password": "wrong"}).status_code == 401
    assert client.post("/login/", {"username": "auditor", "password": PASSWORD}).status_code == 302
    assert client.post("/logout/").status_code == 302
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", "actor_name"))[-3:]
    assert actions == [("auth.login_failed", "system"), ("auth.login", "auditor"), ("auth.logout", "auditor")]
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert failed.context == {"username": "auditor", "reason": "bad username or password"}
    assert "wrong" not in str(failed.as_dict())  # the password tried
    assert failed.source_ip == "127.0.0.1" and len(failed.request_id) == 32


def test_it_records_people_changes_with_before_and_after(people, client_for):
    admin_client = client_for("admin")
    user = people["outsider"]
    response = admin_client.patch(f"/api/users/{user.pk}/", {"role": "auditor"}, content_type="application/json")
    assert response.status_code == 200
    event = AuditEvent.objects.filter(action="user.update").latest("seq")
    assert (event.before, event.after, event.actor_name) == ({"role": "none"}, {"role": "auditor"}, "admin")
    response = admin_client.post(
        "/api/departments/", {"name": "Oncology", "slug": "oncology"}, content_type="application/json"
    )
    assert response.status_code == 201
    assert AuditEvent.objects.filter(action="department.create", target_repr="Oncology").count() == 1
    user.refresh_from_db()
    user.set_password("A-new-Passw0rd-here")
    user.save()
    pw = AuditEvent.objects.filter(action="user.update").latest("seq")
    assert pw.after == {"password": "[redacted]"} and "A-new" not in str(pw.as_dict())


def test_it_skips_saves_that_change_nothing(people):
    before = AuditEvent.objects.count()
    people["admin"].save()
    User.objects.get(pk=people["admin"].pk).save(update_fields=["last_login"])
    assert AuditEvent.objects.count() == before


def test_it_records_deletions(db):
    dept = Department.objects.create(name="Temp", slug="temp")
    dept.delete()
    event = AuditEvent.objects.latest("seq")
    assert event.action == "department.delete" and event.before["name"] == "Temp"
