"""The usage ledger, written off the hot path: requests append to a list; a thread writes the rows,
their audit events and the keys' last-used times in one transaction per batch."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from django.db import close_old_connections, transaction

from access.models import ApiKey, UsageRecord
from audit.chain import record_many

log = logging.getLogger(__name__)
FLUSH_EVERY_S = 0.25
MAX_BATCH = 1000
MAX_BACKLOG = 200_000  # if the database is away this long, drop the oldest rather than run out of memory


@dataclass
class Usage:
    at: float  # epoch seconds
    key_id: int
    key_prefix: str
    user_id: int
    username: str
    role: str
    department_id: int | None
    department: str
    model: str
    deployment_id: int | None
    instance_id: int | None
    endpoint: str
    stream: bool
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    input_sha256: str
    request_id: str
    source_ip: str


class Ledger:
    def __init__(self) -> None:
        self._pending: list[Usage] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0

    def add(self, usage: Usage) -> None:
        with self._lock:
            self._pending.append(usage)
            if len(self._pending) > MAX_BACKLOG:
                del self._pending[: len(self._pending) - MAX_BACKLOG]
                self.dropped += 1
            if len(self._pending) >= MAX_BATCH:
                self._wake.set()
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_EVERY_S)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the database is away: keep the rows and try again
                log.exception("could not write the usage ledger; will retry")
                close_old_connections()
                time.sleep(1)

    def flush(self) -> int:
        with self._lock:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if not batch:
            return 0
        try:
            write(batch)
        except Exception:
            with self._lock:
                self._pending[:0] = batch
            raise
        self.written += len(batch)
        if self._pending:
            self._wake.set()
        return len(batch)


def _existing(model, ids: set) -> set:
    ids.discard(None)
    return set(model.objects.filter(pk__in=ids).values_list("pk", flat=True)) if ids else set()


def write(batch: list[Usage]) -> None:
    close_old_connections()
    from access.models import Department, User
    from fleet.models import Deployment

    # A key, user, department or deployment deleted since the request keeps its row, without the link.
    keys = _existing(ApiKey, {u.key_id for u in batch})
    users = _existing(User, {u.user_id for u in batch})
    departments = _existing(Department, {u.department_id for u in batch})
    deployments = _existing(Deployment, {u.deployment_id for u in batch})
    rows, events, last_used = [], [], {}
    for u in batch:
        at = datetime.fromtimestamp(u.at, tz=timezone.utc)
        rows.append(UsageRecord(
            created_at=at, key_id=u.key_id if u.key_id in keys else None,
            user_id=u.user_id if u.user_id in users else None,
            department_id=u.department_id if u.department_id in departments else None, model=u.model,
            deployment_id=u.deployment_id if u.deployment_id in deployments else None, instance_id=u.instance_id, endpoint=u.endpoint, stream=u.stream,
            status=u.status, prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
            latency_ms=round(u.latency_ms, 3), ttft_ms=None if u.ttft_ms is None else round(u.ttft_ms, 3),
            input_sha256=u.input_sha256, request_id=u.request_id))
        events.append({
            "actor": (u.user_id, u.username, u.role, u.department), "action": "gateway.request",
            "target": ("access.apikey", u.key_id, f"key {u.key_prefix}…"), "created_at": at,
            "source_ip": u.source_ip, "request_id": u.request_id, "channel": "gateway",
            "context": {"model": u.model, "endpoint": u.endpoint, "deployment": u.deployment_id,
                        "instance": u.instance_id, "status": u.status, "stream": u.stream,
                        "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                        "latency_ms": round(u.latency_ms, 1), "input_sha256": u.input_sha256}})
        if u.key_id in keys:
            last_used[u.key_id] = max(at, last_used.get(u.key_id, at))
    with transaction.atomic():
        UsageRecord.objects.bulk_create(rows)
        record_many(events)
        for key_id, at in last_used.items():
            ApiKey.objects.filter(pk=key_id).update(last_used_at=at)
