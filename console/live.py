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
_loop_lock = threading.Lock()


def _message(topic: str, payload: Any) -> dict:
    return {"type": MESSAGE_TYPE, "topic": topic, "payload": payload}


async def apublish(topic: str, payload: Any) -> None:
    await get_channel_layer().group_send(topic, _message(topic, payload))


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid():  # a forked child (Celery pool) needs its own
            _loop, _loop_pid = asyncio.new_event_loop(), os.getpid()
            threading.Thread(target=_loop.run_forever, name="live-publish", daemon=True).start()
        return _loop


def _report(future: Future) -> None:
    if future.exception() is not None:
        log.error("live publish failed: %s", future.exception())


def publish(topic: str, payload: Any) -> Future:
    """Queue a message for ``topic``; returns a future for callers that want to wait on it."""
    future = asyncio.run_coroutine_threadsafe(apublish(topic, payload), _background_loop())
    future.add_done_callback(_report)
    return future
