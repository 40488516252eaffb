"""Exports for auditors: CSV, JSON Lines and a PDF summary of a period, and a signed bundle of all
three with a manifest (each file's SHA-256, the chain's anchor and head) that ``verify_export.py``
checks offline. Everything streams from a server-side cursor: memory stays flat however long the
period."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from django.db.models import Count, F, IntegerField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone

from audit import pdf, signing
from audit.chain import canonical_json
from audit.filters import FilterError, TrailFilter, parse_when
from audit.models import COLUMNS, AuditEvent

FORMAT = "fleet-console-audit-export/1"
FIELDS = [*COLUMNS, "hash"]
JSON_COLUMNS = {"before", "after", "context"}
DETAIL_ROWS = 500  # refusals and failed sign-ins listed one by one in the PDF


@dataclass(frozen=True)
class Period:
    since: datetime | None
    until: datetime | None
    where: TrailFilter | None = None  # the trail's filter (who, what, on what), if the export narrows

    @classmethod
    def parse(cls, since: str, until: str, where: TrailFilter | None = None) -> Period:
        """Dates or date-times (``until`` includes its whole day); refuses bad input with FilterError."""
        start = parse_when("since", since.strip()) if since and since.strip() else None
        end = parse_when("until", until.strip(), end_of_day=True) if until and until.strip() else None
        if start and end and start > end:
            raise FilterError("since must not be after until.")
        if where is not None:
            where.narrow(AuditEvent.objects.none())  # its values checked now, before anything is written
        return cls(start, end, where if where is not None and where.narrows() else None)

    def events(self):
        qs = AuditEvent.objects.order_by("seq")
        if self.since:
            qs = qs.filter(created_at__gte=self.since)
        if self.until:
            qs = qs.filter(created_at__lte=self.until)
        return self.where.narrow(qs) if self.where else qs

    def label(self) -> str:
        fmt = lambda d: d.isoformat(timespec="seconds") if d else None  # noqa: E731
        where = self.where.as_dict() if self.where else {}
        narrowed = "; " + ", ".join(f"{k} {v}" for k, v in where.items() if k not in ("since", "until"))
        return f"{fmt(self.since) or 'the beginning'} to {fmt(self.until) or 'now'}" + (narrowed if where else "")

    def as_dict(self) -> dict:
        where = self.where.as_dict() if self.where else {}
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        } | {k: v for k, v in where.items() if k not in ("since", "until")}


@dataclass(frozen=True)
class SeqRange:
    """Events by number (an archive segment): first..last inclusive."""

    first: int
    last: int

    def events(self):
        return AuditEvent.objects.filter(seq__gte=self.first, seq__lte=self.last).order_by("seq")

    def label(self) -> str:
        return f"events {self.first} to {self.last}"

    def as_dict(self) -> dict:
        return {"first_seq": self.first, "last_seq": self.last}


def _rows(period: Period | SeqRange) -> Iterator[dict]:
    for row in period.events().values_list(*FIELDS).iterator(chunk_size=5000):
        event = dict(zip(FIELDS, row, strict=True))
        event["created_at"] = event["created_at"].isoformat(timespec="microseconds")
        yield event


def csv_lines(period: Period | SeqRange) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(FIELDS)
    for event in _rows(period):
        writer.writerow([canonical_json(event[f]) if f in JSON_COLUMNS else event[f] for f in FIELDS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def jsonl_lines(period: Period | SeqRange) -> Iterator[bytes]:
    """One event per line as canonical JSON: its hash can be recomputed from the line alone."""
    chunk: list[str] = []
    for event in _rows(period):
        chunk.append(canonical_json(event))
        if len(chunk) >= 1000:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()


def summary(period: Period | SeqRange) -> dict:
    """Counts for the PDF report: by action, department, model; top users; denials; failed logins."""
    qs = period.events().order_by()

    def counted(qs_, field: str, limit: int = 30) -> list[tuple[str, int]]:
        return [(r[field] or "—", r["n"]) for r in qs_.values(field).annotate(n=Count("id")).order_by("-n")[:limit]]

    gateway = qs.filter(action="gateway.request").annotate(
        model=KeyTextTransform("model", "context"), status=Cast(KeyTextTransform("status", "context"), IntegerField())
    )
    refused = gateway.filter(status__gte=400, status__lt=500)
    failed_logins = qs.filter(action="auth.login_failed").annotate(username=KeyTextTransform("username", "context"))
    per_day = qs.annotate(day=TruncDate("created_at", tzinfo=UTC)).values("day").annotate(n=Count("id")).order_by("day")
    return {
        "total": qs.count(),
        "first_seq": qs.order_by("seq").values_list("seq", flat=True).first(),
        "last_seq": qs.order_by("-seq").values_list("seq", flat=True).first(),
        "by_action": counted(qs, "action"),
        "by_department": counted(qs, "actor_department"),
        "by_model": counted(gateway, "model"),
        "top_users": counted(qs.exclude(actor_id=None), "actor_name", 10),
        "denied_access_requests": qs.filter(action="access.deny").count(),
        "refused_gateway_calls": counted(refused, "status"),
        "failed_logins": failed_logins.count(),
        "failed_login_names": counted(failed_logins, "username", 10),
        "lockouts": qs.filter(action="auth.lockout").count(),
        "per_day": [(r["day"].isoformat(), r["n"]) for r in per_day],
        # One by one (the first DETAIL_ROWS; the CSV holds every one): who, when, what and which request.
        "refusals_total": refused.count(),
        "refusals": _one_by_one(refused, "model", "status", "request_id", actor=F("actor_name")),
        "failed_login_events": _one_by_one(failed_logins, "username", "source_ip", "channel"),
    }


def _one_by_one(events, *fields: str, **aliases: F) -> list[dict]:
    """The first DETAIL_ROWS events in order, each with its time in UTC to the second."""
    rows = events.order_by("seq").values("seq", "created_at", *fields, **aliases)[:DETAIL_ROWS]
    return [row | {"created_at": row["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")} for row in rows]


def pdf_report(period: Period | SeqRange) -> bytes:
    return pdf.render(
        summary(period),
        period=period.label(),
        generated=timezone.now().isoformat(timespec="seconds"),
        fingerprint=signing.fingerprint(),
    )


class _Hashing:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target, self.sha, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.target.write(data)
        self.sha.update(data)
        self.size += len(data)


def write_bundle(period: Period | SeqRange, out: IO[bytes]) -> dict:
    """A zip of events.csv, events.jsonl, summary.pdf, manifest.json and manifest.sig; returns the manifest."""
    files: dict[str, dict] = {}
    first = last = None
    count = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        with bundle.open("events.csv", "w", force_zip64=True) as member:
            sink = _Hashing(member)
            for chunk in csv_lines(period):
                sink.write(chunk)
            files["events.csv"] = {"sha256": sink.sha.hexdigest(), "bytes": sink.size}
        with bundle.open("events.jsonl", "w", force_zip64=True) as member:
            sink = _Hashing(member)
            for event in _rows(period):
                sink.write(canonical_json(event).encode() + b"\n")
                first = first or (event["seq"], event["prev_hash"])
                last = (event["seq"], event["hash"])
                count += 1
            files["events.jsonl"] = {"sha256": sink.sha.hexdigest(), "bytes": sink.size}
        report = pdf_report(period)
        bundle.writestr("summary.pdf", report)
        files["summary.pdf"] = {"sha256": hashlib.sha256(report).hexdigest(), "bytes": len(report)}
        head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        manifest = {
            "format": FORMAT,
            "period": period.as_dict(),
            "generated_at": timezone.now().isoformat(),
            "events": count,
            "first_seq": first[0] if first else None,
            "last_seq": last[0] if last else None,
            "anchor_prev_hash": first[1] if first else None,
            "last_hash": last[1] if last else None,
            "chain_head": {"seq": head[0], "hash": head[1]} if head else None,
            "files": files,
            "public_key": signing.public_key_b64(),
            "key_fingerprint": signing.fingerprint(),
        }
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        bundle.writestr("manifest.json", body)
        bundle.writestr("manifest.sig", signing.sign(body) + "\n")
    return manifest
