"""The one way to push live data to browsers: a message to a topic's channel group.

``publish`` is fire-and-forget from synchronous code: messages go to one background event loop
per process, which keeps its Redis connections open between messages, so the caller (an audit
write, a request, the agent's sampler) never waits on Redis and no connection is opened per
message. The machinery is fleet.protocol.live's
``Publisher`` (the agent, which has no Django settings, builds its own around a layer).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from fleet.protocol.live import Publisher, message

__all__ = ["apublish", "publish", "publish_many", "publish_on_commit", "publish_soon"]


def _default_layer() -> Any:
    return get_channel_layer()


async def apublish(topic: str, payload: Any) -> None:
    await _default_layer().group_send(topic, message(topic, payload))


_default = Publisher(_default_layer)


def publish(topics: str | tuple[str, ...], payload: Any) -> Future:
    return _default.publish(topics, payload)


def publish_many(topic: str, payloads: list[Any]) -> Future:
    return _default.publish_many(topic, payloads)


def publish_soon(topic: str, payload: Any, window_s: float = 0.05) -> None:
    _default.publish_soon(topic, payload, window_s)


def publish_on_commit(topics: str | tuple[str, ...], payload: Any) -> None:
    """Publish once the current transaction commits (at once outside one): browsers never see a
    change that was rolled back."""
    transaction.on_commit(lambda: publish(topics, payload))
