"""Auditor features on real Postgres: incremental verification with alerts, signed exports checked
by verify_export.py (and tampering with them caught), retention into signed segments."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

import audit
import verify_export
from audit import archive, exports, serializers, signing, verification
from audit import context as audit_context
from audit.models import ArchiveSegment, AuditEvent
from console.config import BASE_DIR
from tests.helpers import read_pdf, tamper


@pytest.fixture
def signing_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_AUDIT_SIGNING_KEY", str(tmp_path / "key.pem"))
    signing.private_key.cache_clear()
    yield signing.public_key_b64()
    signing.private_key.cache_clear()


@pytest.fixture
def events(people):
    for i in range(20):
        audit.record(people["admin"], "test.step", people["dept_user"], after={"n": i, "ratio": i / 3})
    audit.record(None, "gateway.request", ("access.apikey", 1, "key"), model="demo", status=429)
    audit.record(None, "auth.login_failed", None, username="mallory")
    return list(AuditEvent.objects.order_by("seq"))


def test_incremental_runs_read_only_what_is_new(events, people, client_for):
    first = verification.run()
    assert first.ok and first.from_seq == 0 and first.intact_up_to == events[-1].seq
    for i in range(5):
        audit.record(people["admin"], "test.more", None, n=i)
    second = verification.run()
    assert second.ok and second.from_seq == first.intact_up_to and second.checked == 5
    page = client_for("auditor").get("/audit/").content.decode()
    assert f"Intact</span> up to event {second.intact_up_to}" in page and "intact up to" not in page  # said once
    assert "(Admin (IT))" in page and "(admin)" not in page  # roles as every other page names them
    assert (
        serializers.public_event(AuditEvent.objects.filter(actor_role="admin").last())["actor_role_label"]
        == "Admin (IT)"
    )


def test_a_change_behind_the_checkpoint_is_found_by_the_full_run_and_alerts(events, client_for):
    verification.run()
    victim = events[3]
    tamper("UPDATE audit_auditevent SET actor_name = 'someone-else' WHERE seq = %s", [victim.seq])
    assert verification.run().ok  # incremental: nothing new to read
    full = verification.run(full=True)
    assert not full.ok and full.broken_seq == victim.seq and "altered" in full.problem
    assert AuditEvent.objects.filter(action="audit.verify_failed").count() == 1
    verification.run(full=True)  # the same break again is not recorded twice
    assert AuditEvent.objects.filter(action="audit.verify_failed").count() == 1
    for persona in ("admin", "auditor"):
        body = client_for(persona).get("/").content.decode()
        assert 'data-testid="audit-alert"' in body and f"broken at event {victim.seq}" in body
    assert 'data-testid="audit-alert"' not in client_for("dept_user").get("/").content.decode()


def test_altering_the_checkpointed_event_is_found_by_the_incremental_run(events):
    checkpoint = verification.run()
    tamper("UPDATE audit_auditevent SET hash = %s WHERE seq = %s", ["e" * 64, checkpoint.intact_up_to])
    result = verification.run()
    assert not result.ok and result.broken_seq == checkpoint.intact_up_to


def test_verify_from_the_ui_and_api(events, client_for):
    assert client_for("auditor").post("/audit/verify/", {"full": "1"}).status_code == 302
    assert (
        client_for("admin").post("/api/audit/verify/", {"full": True}, content_type="application/json").json()["full"]
    )
    assert client_for("dept_user").post("/audit/verify/").status_code == 403


def _bundle(client, query: str = "") -> bytes:
    response = client.get(f"/audit/export/bundle/{query}")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    return b"".join(response.streaming_content)


def test_a_bundle_verifies_offline_and_any_change_is_caught(events, client_for, signing_key, tmp_path):
    data = _bundle(client_for("auditor"))
    path = tmp_path / "export.zip"
    path.write_bytes(data)
    report = verify_export.verify(path, signing_key)
    last = AuditEvent.objects.order_by("-seq").first().seq  # the export's own event is in it too
    assert report.startswith(f"OK: {last} events 1..{last}, chain intact")
    # the standalone script, as an auditor runs it
    run = subprocess.run(
        [sys.executable, str(BASE_DIR / "verify_export.py"), str(path), "--public-key", signing_key],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and run.stdout.startswith("OK:")

    def altered(name: str, change) -> Path:
        out = tmp_path / f"altered-{name}.zip"
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
            for item in src.namelist():
                body = src.read(item)
                dst.writestr(item, change(body) if item == name else body)
        return out

    csv_edit = altered("events.csv", lambda b: b.replace(b"test.step", b"test.stap", 1))
    with pytest.raises(verify_export.Broken, match="events.csv differs from the manifest"):
        verify_export.verify(csv_edit, signing_key)
    manifest_edit = altered("manifest.json", lambda b: b.replace(b'"events": ', b'"events": 1', 1))
    with pytest.raises(verify_export.Broken, match="manifest.sig does not verify"):
        verify_export.verify(manifest_edit, signing_key)
    other_key = base64.b64encode(b"\x01" * 32).decode()
    with pytest.raises(verify_export.Broken, match="manifest.sig does not verify"):
        verify_export.verify(path, other_key)
    run = subprocess.run(
        [sys.executable, str(BASE_DIR / "verify_export.py"), str(csv_edit)], capture_output=True, text=True
    )
    assert run.returncode == 1 and "BROKEN" in run.stderr


def test_the_chain_inside_a_bundle_is_checked_event_by_event(events, tmp_path, signing_key):
    out = io.BytesIO()
    exports.write_bundle(exports.Period(None, None), out)
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as bundle:
        bundle.extractall(unpacked)
    assert verify_export.verify(unpacked, signing_key).startswith("OK")
    # Re-sign a manifest over a forged event (as a thief of the files, not of the key, cannot):
    lines = (unpacked / "events.jsonl").read_text().splitlines()
    forged = json.loads(lines[5])
    forged["actor_name"] = "nobody"
    lines[5] = json.dumps(forged)
    (unpacked / "events.jsonl").write_text("\n".join(lines) + "\n")
    manifest = json.loads((unpacked / "manifest.json").read_text())
    body = (unpacked / "events.jsonl").read_bytes()
    manifest["files"]["events.jsonl"] = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
    (unpacked / "manifest.json").write_text(json.dumps(manifest))
    (unpacked / "manifest.sig").write_text(signing.sign((unpacked / "manifest.json").read_bytes()))
    with pytest.raises(verify_export.Broken, match=f"event {forged['seq']}: content does not match its hash"):
        verify_export.verify(unpacked, signing_key)


def test_an_empty_period_is_a_valid_signed_empty_bundle(events, client_for, signing_key, tmp_path):
    path = tmp_path / "empty.zip"
    path.write_bytes(_bundle(client_for("auditor"), "?since=2001-01-01&until=2001-01-02"))
    assert "OK: 0 no events" in verify_export.verify(path, signing_key)


@pytest.mark.parametrize("query", ["?since=yesterday", "?until=2026-02-30", "?since=2026-11-20T25:00"])
def test_bad_periods_and_filters_are_400(events, client_for, query):
    client = client_for("auditor")
    for url in ("/audit/export/csv/", "/audit/export/bundle/", "/audit/", "/api/audit/events/"):
        response = client.get(url + query)
        assert response.status_code == 400, (url, query)
    assert client.get("/audit/export/xml/").status_code == 404


def test_a_window_that_ends_before_it_starts_is_empty(events, client_for):
    response = client_for("auditor").get("/api/audit/events/?since=2026-11-20&until=2026-11-01")
    assert response.status_code == 200 and response.json()["results"] == []


def test_csv_and_pdf_exports(events, client_for):
    client = client_for("auditor")
    csv_body = b"".join(client.get("/audit/export/csv/").streaming_content).decode()
    assert csv_body.splitlines()[0].startswith("seq,created_at,actor_id")
    assert len(csv_body.splitlines()) == AuditEvent.objects.count() + 1
    pdf = client.get("/audit/export/pdf/")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    report = read_pdf(pdf.content)
    assert "Action Events" in report.text and "test.step 20" in report.text  # the counts as a table
    assert "mallory" in report.text and "429" in report.text  # the failed sign-in and the refusal, one by one
    assert report.bars and timezone.now().strftime("%m-%d") in report.text  # the chart of events per day
    assert all(signing.fingerprint() in page for page in report.pages)  # the key on every page
    summary = exports.summary(exports.Period(None, None))
    assert summary["failed_logins"] == 1 and summary["failed_login_names"] == [("mallory", 1)]
    assert summary["refused_gateway_calls"] == [(429, 1)] and summary["by_model"] == [("demo", 1)]
    assert AuditEvent.objects.filter(action="audit.export").count() == 2  # who exported what is on the record
    assert client_for("dept_user").get("/audit/export/csv/").status_code == 403


def test_a_long_period_spans_pages_with_the_key_on_each(people, client_for):
    for i in range(700):
        audit.record(None, "auth.login_failed", None, username=f"guess-{i}")
    report = read_pdf(client_for("auditor").get("/audit/export/pdf/").content)
    assert len(report.pages) > 3 and all(signing.fingerprint() in page for page in report.pages)
    assert "guess-0" in report.text and f"first {exports.DETAIL_ROWS} are listed" in report.text


def test_retention_archives_old_events_and_the_rest_still_verifies(events, settings, tmp_path, signing_key, people):
    settings.FLEET_AUDIT_ARCHIVE_DIR = str(tmp_path / "archive")
    cutoff = events[10].created_at + timedelta(microseconds=1)
    segment = archive.archive_before(cutoff)
    assert segment.last_seq == events[10].seq and segment.events == 11
    assert not AuditEvent.objects.filter(seq__lte=segment.last_seq).exists()
    assert verify_export.verify(Path(segment.path), signing_key).startswith("OK: 11 events")
    assert verification.run(full=True).ok  # from the segment's anchor
    audit.record(people["admin"], "test.after", None)
    assert verification.run(full=True).ok
    assert AuditEvent.objects.filter(action="audit.archive").count() == 1
    # Outside an archiving transaction, or past the archived events, rows still cannot go.
    for sql in (
        f"DELETE FROM audit_auditevent WHERE seq = {AuditEvent.objects.order_by('seq').first().seq}",
        "TRUNCATE audit_auditevent",
    ):
        with pytest.raises(DatabaseError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL fleet.audit_allow_truncate = 'off'")
                cursor.execute("SET LOCAL fleet.audit_archive = 'on'")
                cursor.execute(sql)
    assert ArchiveSegment.objects.count() == 1


def test_until_a_date_includes_that_whole_day(events, client_for):
    today = timezone.localdate().isoformat()
    body = b"".join(client_for("auditor").get(f"/audit/export/csv/?since={today}&until={today}").streaming_content)
    assert len(body.decode().splitlines()) == AuditEvent.objects.count() + 1
    trail = client_for("auditor").get(f"/api/audit/events/?until={today}").json()["results"]
    assert len(trail) == min(50, AuditEvent.objects.count())


def test_a_filtered_trail_exports_just_its_events(events, client_for, signing_key):
    client = client_for("auditor")
    page = client.get("/audit/?action=test.step&role=admin").content.decode()
    link = re.search(r'href="(/audit/export/csv/\?[^"]+)" data-testid="export-filtered-csv"', page).group(1)
    body = b"".join(client.get(link.replace("&amp;", "&")).streaming_content).decode()
    assert len(body.splitlines()) == 1 + 20 and all(",test.step," in line for line in body.splitlines()[1:])
    report = read_pdf(client.get("/audit/export/pdf/?actor=admin&action=test.step").content)
    assert "test.step 20" in report.text and "actor admin" in report.text  # the filter is on the report
    bundle = client.get("/audit/export/bundle/?action=test.step")  # a bundle's chain needs every event
    assert bundle.status_code == 400 and b"every event of its period" in bundle.content
    assert client.get("/audit/export/csv/?role=wizard").status_code == 400
    assert client.get("/api/audit/events/?role=wizard").status_code == 400
    assert {e["actor_role"] for e in client.get("/api/audit/events/?role=admin").json()["results"]} == {"admin"}


def test_an_event_opens_with_every_field_its_diff_and_its_request(people, client_for):
    with audit_context.bound(user=people["admin"], source_ip="10.0.0.9", request_id="req-abcdef12", channel="web"):
        first = audit.record(
            people["admin"], "user.update", people["dept_user"], before={"role": "none"}, after={"role": "auditor"}
        )
        second = audit.record(people["admin"], "grant.create", people["dept_user"], after={"models": ["demo"]})
    client = client_for("auditor")
    panel = client.get(f"/audit/events/{first.seq}/", headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in panel and "10.0.0.9" in panel and "req-abcdef12" in panel and first.hash in panel
    diff = panel.split('data-testid="event-diff"')[1].split("</table>")[0]
    assert "<del>none</del>" in diff and "<ins>auditor</ins>" in diff
    assert f"/audit/events/{second.seq}/" in panel.split('data-testid="event-related"')[1]
    assert b"event-page" in client.get(f"/audit/events/{first.seq}/").content  # linked to: a page of its own
    assert client_for("dept_user").get(f"/audit/events/{first.seq}/").status_code == 403
    assert client.get("/audit/events/999999/").status_code == 404
    # The trail's pickers offer the values the trail holds (the department by its name as recorded).
    audit.record(people["dept_user"], "access.request", None)
    cache.delete_many(["audit:seen:actor_department", "audit:seen:action"])
    page = client.get("/audit/").content.decode()
    picker = page.split('data-testid="department-picker"')[1].split("</select>")[0]
    name = people["dept_user"].department.name
    assert f'<option value="{name}">{name}</option>' in picker
    assert '<option value="user.">user.* (every user action)</option>' in page
    rows = client.get("/api/audit/events/", {"department": name}).json()["results"]
    assert "access.request" in [e["action"] for e in rows] and {e["actor_department"] for e in rows} == {name}
