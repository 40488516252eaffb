"""Verification runs: incremental from a checkpoint (hourly) or from the start (daily, or asked for).

A failure is recorded in the trail itself and shown to admins and auditors on every page until
a later run is intact again."""

from __future__ import annotations

from django.utils import timezone

import audit
from audit.chain import GENESIS, VerifyResult, verify
from audit.models import ArchiveSegment, AuditEvent, VerifyRun


def anchor() -> tuple[int, str]:
    """Where the chain in the table begins: after the newest archived segment, or the genesis."""
    segment = ArchiveSegment.objects.order_by("-last_seq").first()
    return (segment.last_seq, segment.last_hash) if segment else (0, GENESIS)


def run(*, full: bool = False, requested_by: str = "schedule") -> VerifyRun:
    started = timezone.now()
    start_seq, start_hash = anchor()
    result: VerifyResult | None = None
    if not full:
        checkpoint = VerifyRun.objects.filter(ok=True, intact_up_to__gte=start_seq).order_by("-intact_up_to").first()
        if checkpoint is not None and checkpoint.intact_up_to > start_seq:
            stored = AuditEvent.objects.filter(seq=checkpoint.intact_up_to).values_list("hash", flat=True).first()
            if stored != checkpoint.head_hash:
                result = VerifyResult(
                    False,
                    0,
                    start_seq,
                    checkpoint.intact_up_to,
                    "the last verified event was altered or removed since it was checked",
                    start_hash,
                )
            else:
                start_seq, start_hash = checkpoint.intact_up_to, checkpoint.head_hash
    if result is None:
        result = verify(after_seq=start_seq, after_hash=start_hash)
    previous = VerifyRun.objects.order_by("-started_at").first()
    done = VerifyRun.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        full=full,
        requested_by=requested_by[:150],
        from_seq=start_seq,
        checked=result.checked,
        intact_up_to=result.intact_up_to,
        head_hash=result.head_hash,
        ok=result.ok,
        broken_seq=result.broken_seq,
        problem=result.problem,
    )
    news = previous is None or previous.ok or (previous.broken_seq, previous.problem) != (done.broken_seq, done.problem)
    if not result.ok and news:  # recorded once per distinct break, not every hour
        audit.record(
            None,
            "audit.verify_failed",
            ("audit.auditevent", result.broken_seq, f"event {result.broken_seq}"),
            after={"broken_seq": result.broken_seq, "problem": result.problem, "intact_up_to": result.intact_up_to},
        )
    return done


def latest() -> VerifyRun | None:
    return VerifyRun.objects.order_by("-started_at").first()
