"""The one way to push live data to browsers: a message to a topic's channel group.

``publish`` is fire-and-forget from synchronous code: messages go to one background event loop
per process, which keeps its Redis connections open between messages, so the caller (an audit
write, a request) never waits on Redis and no connection is opened per message.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import Future
from typing import Any

from channels.layers import get_channel_layer

__all__ = ["publish", "apublish", "MESSAGE_TYPE"]

MESSAGE_TYPE = "live.message"  # handled by LiveConsumer.live_message
log = logging.getLogger(__name__)

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_in_order: asyncio.Lock | None = None  # FIFO: messages leave in the order publish() was called
_loop_lock = threading.Lock()


def _message(topic: str, payload: Any) -> dict:
    return {"type": MESSAGE_TYPE, "topic": topic, "payload": payload}


async def apublish(topic: str, payload: Any) -> None:
    await get_channel_layer().group_send(topic, _message(topic, payload))


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid, _in_order
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid():  # a forked child (Celery pool) needs its own
            _loop, _loop_pid, _in_order = asyncio.new_event_loop(), os.getpid(), asyncio.Lock()
            threading.Thread(target=_loop.run_forever, name="live-publish", daemon=True).start()
        return _loop


async def _publish_in_order(topic: str, payload: Any) -> None:
    # group_send awaits Redis several times; without the lock two messages could interleave
    # and arrive out of order (audit rows would then be prepended in the wrong order).
    assert _in_order is not None
    async with _in_order:
        await apublish(topic, payload)


def _report(future: Future) -> None:
    if future.exception() is not None:
        log.error("live publish failed: %s", future.exception())


def publish(topic: str, payload: Any) -> Future:
    """Queue a message for ``topic``; returns a future for callers that want to wait on it."""
    loop = _background_loop()
    future = asyncio.run_coroutine_threadsafe(_publish_in_order(topic, payload), loop)
    future.add_done_callback(_report)
    return future
