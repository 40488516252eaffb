"""The usage ledger's queue against real Redis and Postgres: what a crash can and cannot lose."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import pytest
import redis
import redis.asyncio as aioredis
from django.conf import settings

from access.gateway import ledger
from access.grants import services as grants
from access.usage.models import UsageRecord
from audit.models import AuditEvent
from console.embedded import free_port


@pytest.fixture
def stream(monkeypatch):
    """A stream of this test's own, so no running worker takes its entries."""
    name = f"test:ledger:{secrets.token_hex(4)}"
    monkeypatch.setattr(ledger, "STREAM", name)
    monkeypatch.setattr(ledger, "DEAD", name + ":dead")
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.delete(name, name + ":dead")


def usage(rid: str | None = None, tokens: int = 3) -> ledger.Usage:
    return ledger.Usage(
        at=time.time(),
        key_id=999_999,  # gone since the call: the row keeps no link
        key_prefix="flk_abcd",
        user_id=999_999,
        username="someone",
        role="dept_user",
        department_id=None,
        department="",
        model="chat-a",
        deployment_id=None,
        instance_id=None,
        endpoint="chat",
        stream=False,
        status=200,
        prompt_tokens=tokens,
        completion_tokens=tokens,
        latency_ms=12.5,
        ttft_ms=None,
        input_sha256="0" * 64,
        request_id=rid or secrets.token_hex(8),
        source_ip="127.0.0.1",
    )


def queue(client: redis.Redis, *rows: ledger.Usage) -> None:
    for row in rows:
        client.xadd(ledger.STREAM, {ledger.FIELD: ledger.encode(row)})


def recorded(rid: str) -> tuple[int, int]:
    return (
        UsageRecord.objects.filter(request_id=rid).count(),
        AuditEvent.objects.filter(action="gateway.request", request_id=rid).count(),
    )


def test_a_worker_killed_between_taking_and_committing_loses_nothing(transactional_db, stream):
    rows = [usage() for _ in range(5)]
    queue(stream, *rows)
    ledger.ensure_group(stream)
    taken = ledger.take(stream, "worker-that-dies")  # taken, then the process is gone: no write, no ack
    assert len(taken) == 5 and UsageRecord.objects.count() == 0

    assert ledger.drain("new-worker") == 0  # not yet idle long enough to be presumed dead
    assert ledger.drain("new-worker", reclaim_idle_ms=0) == 5
    assert all(recorded(r.request_id) == (1, 1) for r in rows)
    assert stream.xlen(ledger.STREAM) == 0  # acknowledged and deleted once committed
    event = AuditEvent.objects.get(action="gateway.request", request_id=rows[0].request_id)
    counts = event.context  # the trail keeps the token counts (redaction is by name)
    assert counts["prompt_tokens"] == 3 and counts["completion_tokens"] == 3, counts


def test_a_row_delivered_twice_is_written_once(transactional_db, stream):
    row = usage()
    queue(stream, row, row)  # e.g. a spool replayed after a crash that followed its push
    assert ledger.drain("w") == 1
    queue(stream, row)
    assert ledger.drain("w") == 0
    assert recorded(row.request_id) == (1, 1)


def test_a_failed_write_leaves_the_rows_queued_for_the_next_drain(transactional_db, stream, monkeypatch):
    row = usage()
    queue(stream, row)
    real, broken = ledger.chain.record_many, [True]

    def record_many(events):
        if broken[0]:
            raise RuntimeError("the database went away mid-batch")
        return real(events)

    monkeypatch.setattr(ledger.chain, "record_many", record_many)
    with pytest.raises(RuntimeError):
        ledger.drain("w")
    assert recorded(row.request_id) == (0, 0)  # the rows' insert rolled back with the events
    broken[0] = False
    assert ledger.drain("w") == 1  # its own unacknowledged entries first, without waiting
    assert recorded(row.request_id) == (1, 1)


def test_an_unreadable_entry_is_kept_aside_not_dropped(transactional_db, stream):
    good = usage()
    stream.xadd(ledger.STREAM, {ledger.FIELD: b"not json"})
    queue(stream, good)
    assert ledger.drain("w") == 1
    assert stream.xlen(ledger.STREAM) == 0
    assert [f[ledger.FIELD] for _, f in stream.xrange(ledger.DEAD)] == [b"not json"]


def test_the_gateway_spools_to_disk_while_redis_is_away_and_replays(transactional_db, stream, tmp_path):
    book = ledger.Ledger(spool_dir=tmp_path)
    rows = [usage() for _ in range(3)]

    async def go() -> None:
        away = aioredis.Redis(port=free_port(), socket_connect_timeout=1)  # nothing listens there
        await asyncio.gather(*(book.record(away, ledger.encode(r)) for r in rows))  # each returns: on disk
        assert book.spooled == 3 and len(book.spool_file.read_text().splitlines()) == 3
        back = aioredis.Redis.from_url(settings.REDIS_URL)
        one_more = usage()
        rows.append(one_more)
        await book.record(back, ledger.encode(one_more))  # Redis is back: this push also replays the spool
        await book.settled()
        await back.aclose()
        await away.aclose()

    asyncio.run(go())
    assert not book.spool_file.exists()
    assert [json.loads(f[ledger.FIELD])[19] for _, f in stream.xrange(ledger.STREAM)] == [
        rows[3].request_id,
        *(r.request_id for r in rows[:3]),
    ]
    assert ledger.drain("w") == 4


def test_the_gateway_refuses_when_neither_redis_nor_the_disk_takes_a_row(stream, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # the spool dir cannot be made under a file
    book = ledger.Ledger(spool_dir=blocked / "spool")

    async def go() -> None:
        away = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
        with pytest.raises(ledger.LedgerUnavailable):
            await book.record(away, ledger.encode(usage()))
        await away.aclose()

    asyncio.run(go())


def test_a_backlog_past_the_line_is_an_alarm_not_a_drop(transactional_db, stream, settings, client_for):
    from django.core.cache import cache

    from access.tasks import check_ledger

    settings.FLEET_LEDGER_BACKLOG_ALARM = 3
    cache.delete("ledger-backlog-alarm")
    queue(stream, *(usage() for _ in range(5)))  # the worker is away
    assert check_ledger() == 5 and check_ledger() == 5
    assert AuditEvent.objects.filter(action="ledger.backlog").count() == 1  # once an hour, not per check
    page = client_for("auditor").get("/").content.decode()
    assert 'data-testid="ledger-alarm"' in page and "5 calls behind" in page
    assert "fleet_ledger_backlog 5" in client_for("admin").get("/metrics").content.decode()
    assert client_for("admin").get("/healthz").json()["ledger"] == {"backlog": 5, "state": "alarm"}
    assert ledger.drain("w") == 5  # nothing was dropped
    assert 'data-testid="ledger-alarm"' not in client_for("auditor").get("/").content.decode()


def test_a_key_revoked_while_its_calls_are_written_deadlocks_neither(transactional_db, stream, people):
    """A revocation holds the key's row and then takes the audit chain's lock; the ledger holds
    the chain's lock while it writes. The ledger must not touch the key's row under that lock."""
    import threading

    from django.db import connection, transaction

    from access.grants.models import ApiKey
    from access.people import services as people_services
    from bench import mock_openai

    deployment, _ = mock_openai.register("chat-r", free_port())
    grant = grants.create_grant(people["admin"], user=people["dept_user"], models=[deployment.model], duration_days=1)
    key, _ = grants.create_key(people["dept_user"], grant=grant, name="k")
    row = usage()._replace(key_id=key.pk)
    locked, errors = threading.Event(), []

    def revoke() -> None:  # people.services.revoke, paused between its row lock and its audit event
        try:
            with transaction.atomic():
                ApiKey.objects.select_for_update(no_key=True).get(pk=key.pk)
                locked.set()
                time.sleep(1.5)  # the ledger's write is under way meanwhile
                people_services.revoke(people["admin"], key, "apikey.revoke", "key")
        except Exception as exc:  # a deadlock is raised in one of the two
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=revoke)
    thread.start()
    assert locked.wait(10)
    try:
        written = ledger.write([row])
    except Exception as exc:
        errors.append(exc)
        written = 0
    thread.join(20)
    assert not errors, errors
    assert written == 1 and recorded(row.request_id) == (1, 1)
    key.refresh_from_db()
    assert key.revoked_at is not None and key.last_used_at is not None
