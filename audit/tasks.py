from __future__ import annotations

import logging

from celery import shared_task

from audit import verification
from audit.archive import apply_retention

log = logging.getLogger(__name__)


@shared_task(name="audit.tasks.verify_chain_task", ignore_result=False)
def verify_chain_task(full: bool = False) -> dict:
    """Periodic (beat: incremental hourly, full daily) and on-demand chain verification."""
    done = verification.run(full=full)
    (log.info if done.ok else log.error)("audit chain: %s", done)
    return {
        "ok": done.ok,
        "checked": done.checked,
        "intact_up_to": done.intact_up_to,
        "broken_seq": done.broken_seq,
        "problem": done.problem,
        "summary": str(done),
    }


@shared_task(name="audit.tasks.archive_task")
def archive_task() -> dict | None:
    """Daily: move events past FLEET_AUDIT_RETENTION_DAYS into a signed segment (none when 0)."""
    segment = apply_retention()
    return {"first_seq": segment.first_seq, "last_seq": segment.last_seq} if segment else None
