"""Retention: events older than ``FLEET_AUDIT_RETENTION_DAYS`` move into signed segment files.

A segment is an export bundle (CSV, JSON Lines, PDF summary, signed manifest) of a run of
events from the oldest on. Its last event's (seq, hash) is kept as the anchor, so what stays in
the table still verifies from there; the database lets those rows go only after the segment is
recorded, in a transaction that says it is archiving."""

from __future__ import annotations

import hashlib
import zipfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

import audit
from audit import exports
from audit.chain import verify
from audit.models import ArchiveSegment, AuditEvent
from audit.verification import anchor


class ArchiveError(Exception):
    pass


def archive_dir() -> Path:
    path = Path(settings.FLEET_AUDIT_ARCHIVE_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def archive_before(cutoff) -> ArchiveSegment | None:
    """Move every event created before ``cutoff`` (and after the last segment) into a new segment."""
    start_seq, start_hash = anchor()
    last = (
        AuditEvent.objects.filter(seq__gt=start_seq, created_at__lt=cutoff)
        .order_by("-seq")
        .values_list("seq", "hash")
        .first()
    )
    if last is None:
        return None
    result = verify(after_seq=start_seq, after_hash=start_hash)
    if not result.ok and (result.broken_seq or 0) <= last[0]:
        raise ArchiveError(f"not archiving a broken chain: {result}")
    span = exports.SeqRange(start_seq + 1, last[0])
    path = archive_dir() / f"segment-{span.first:012d}-{span.last:012d}.zip"
    with open(path, "wb") as out:
        manifest = exports.write_bundle(span, out)
    with zipfile.ZipFile(path) as bundle:
        manifest_sha = hashlib.sha256(bundle.read("manifest.json")).hexdigest()
    with transaction.atomic():
        segment = ArchiveSegment.objects.create(
            first_seq=span.first,
            last_seq=span.last,
            last_hash=last[1],
            events=manifest["events"],
            path=str(path),
            manifest_sha256=manifest_sha,
        )
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL fleet.audit_archive = 'on'")
            cursor.execute("DELETE FROM audit_auditevent WHERE seq <= %s", [span.last])
        audit.record(
            None,
            "audit.archive",
            segment,
            after={
                "first_seq": span.first,
                "last_seq": span.last,
                "events": manifest["events"],
                "file": path.name,
                "manifest_sha256": manifest_sha,
                "anchor_hash": last[1],
            },
        )
    return segment


def apply_retention() -> ArchiveSegment | None:
    days = settings.FLEET_AUDIT_RETENTION_DAYS
    if days <= 0:
        return None
    return archive_before(timezone.now() - timedelta(days=days))
