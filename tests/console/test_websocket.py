"""/ws/: refused to anonymous visitors, topics joined only after a role check (real Redis layer)."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from console import live
from console.asgi import application
from console.consumers import LiveConsumer


def _run(coro_fn):
    return async_to_sync(coro_fn)()


def test_an_anonymous_websocket_is_refused(db):
    async def go():
        comm = WebsocketCommunicator(application, "/ws/", headers=[(b"origin", b"http://127.0.0.1")])
        connected, code = await comm.connect()
        assert not connected and code == 4401

    _run(go)


def _as(user) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/")
    comm.scope["user"] = user
    return comm


@pytest.mark.parametrize(
    "persona,topic,allowed",
    [
        ("dept_user", "fleet", False),
        ("dept_user", "audit", False),
        ("dept_user", "telemetry.node.1", False),
        ("auditor", "audit", True),
        ("auditor", "fleet", False),
        ("admin", "fleet", True),
        ("admin", "telemetry.node.7", True),
        ("outsider", "audit", False),
    ],
)
def test_topics_need_the_right_role(people, persona, topic, allowed):
    async def go():
        comm = _as(people[persona])
        connected, _ = await comm.connect()
        assert connected
        await comm.send_json_to({"action": "subscribe", "topic": topic})
        reply = await comm.receive_json_from(timeout=5)
        if allowed:
            assert reply == {"type": "subscribed", "topic": topic}
        else:
            assert reply["type"] == "error" and reply["error"] == "forbidden" and topic in reply["message"]
        await comm.disconnect()

    _run(go)


def test_own_user_topic_only(people):
    me, other = people["dept_user"], people["auditor"]

    async def go():
        comm = _as(me)
        await comm.connect()
        await comm.send_json_to({"action": "subscribe", "topic": f"user.{other.pk}"})
        assert (await comm.receive_json_from(timeout=5))["error"] == "forbidden"
        await comm.send_json_to({"action": "subscribe", "topic": f"user.{me.pk}"})
        assert (await comm.receive_json_from(timeout=5))["type"] == "subscribed"
        await comm.disconnect()

    _run(go)


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        '["a list"]',
        '{"action": "dance"}',
        '{"action": "subscribe"}',
        '{"action": "subscribe", "topic": "no.such.topic"}',
    ],
)
def test_bad_messages_get_a_clear_error(people, message):
    async def go():
        comm = _as(people["admin"])
        await comm.connect()
        await comm.send_to(text_data=message)
        reply = await comm.receive_json_from(timeout=5)
        assert reply["type"] == "error" and reply["message"]
        await comm.disconnect()

    _run(go)


def test_a_subscriber_receives_what_is_published(people):
    topic = "fleet"
    marker = uuid.uuid4().hex

    async def go():
        comm = _as(people["admin"])
        await comm.connect()
        await comm.send_json_to({"action": "subscribe", "topic": topic})
        await comm.receive_json_from(timeout=5)
        await live.apublish(topic, {"marker": marker})
        assert await comm.receive_json_from(timeout=5) == {"type": "event", "topic": topic, "data": {"marker": marker}}
        await comm.send_json_to({"action": "unsubscribe", "topic": topic})
        assert (await comm.receive_json_from(timeout=5))["type"] == "unsubscribed"
        await live.apublish(topic, {"marker": "after"})
        assert await comm.receive_nothing(timeout=0.5)
        await comm.disconnect()

    _run(go)


def test_published_messages_arrive_in_the_order_they_were_published(people):
    async def go():
        comm = _as(people["admin"])
        await comm.connect()
        await comm.send_json_to({"action": "subscribe", "topic": "fleet"})
        await comm.receive_json_from(timeout=5)
        for i in range(30):
            live.publish("fleet", {"n": i})  # the synchronous, fire-and-forget path
        received = [(await comm.receive_json_from(timeout=5))["data"]["n"] for _ in range(30)]
        assert received == list(range(30))
        await comm.disconnect()

    _run(go)
