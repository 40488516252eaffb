"""Background work for access: grants that ran out are recorded once, and gateways told."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

import audit
from access import bus
from access.gateway import ledger
from access.grants.models import Grant
from access.people import directory
from access.usage import queries
from console.celery import SURVIVES_A_CRASH


@shared_task(name="access.expire_grants")
def expire_grants() -> int:
    """The gateway refuses an expired grant at once (it checks the time); this writes the trail."""
    with transaction.atomic():
        ran_out = list(
            Grant.objects.select_for_update(skip_locked=True).filter(
                expires_at__lte=timezone.now(), expiry_recorded=False, revoked_at__isnull=True
            )
        )
        for grant in ran_out:
            grant.expiry_recorded = True
            grant.save(update_fields=["expiry_recorded"])
            audit.record(None, "grant.expire", grant, after={"expires_at": grant.expires_at})
        if ran_out:
            bus.publish_on_commit("keys")
    return len(ran_out)


# Idempotent (rows are keyed by request id) and the stream keeps what is not acknowledged, so a
# redelivered or repeated task is harmless.
@shared_task(name="access.write_usage", **SURVIVES_A_CRASH)
def write_usage() -> int:
    """Write the gateway's queued usage rows and their audit events (see access.gateway.ledger)."""
    return ledger.drain()


@shared_task(name="access.check_ledger")
def check_ledger() -> int | None:
    """Audit a ledger backlog past the alarm line, at most once an hour (the banner shows it live)."""
    waiting = ledger.backlog_alarm()
    if waiting is not None and cache.add("ledger-backlog-alarm", 1, timeout=3600):
        audit.record(
            None, "ledger.backlog", None, after={"backlog": waiting, "alarm_at": settings.FLEET_LEDGER_BACKLOG_ALARM}
        )
    return waiting


@shared_task(name="access.sync_directory")
def sync_directory() -> dict:
    """Deactivate whom the directory disabled or removed, and re-map roles (access.people.directory)."""
    result = directory.sync()
    return {"checked": result.checked, "deactivated": result.deactivated, "error": result.error}


@shared_task(name="access.prune_usage")
def prune_usage() -> int:
    """Delete ledger rows older than FLEET_USAGE_RETENTION_DAYS (0: none), a batch at a time; their
    hourly rollups stay, so summaries and charts keep every call."""
    return queries.prune(settings.FLEET_USAGE_RETENTION_DAYS)
