"""The one way to push live data to browsers: a message to a topic's channel group."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

__all__ = ["publish", "apublish", "MESSAGE_TYPE"]

MESSAGE_TYPE = "live.message"  # handled by LiveConsumer.live_message


def _message(topic: str, payload: Any) -> dict:
    return {"type": MESSAGE_TYPE, "topic": topic, "payload": payload}


async def apublish(topic: str, payload: Any) -> None:
    await get_channel_layer().group_send(topic, _message(topic, payload))


def publish(topic: str, payload: Any) -> None:
    """From synchronous code. If this thread also hosts a running event loop (sync code called
    from inside one), async_to_sync cannot be used here, so a short-lived thread sends it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(apublish)(topic, payload)
        return
    sender = threading.Thread(target=async_to_sync(apublish), args=(topic, payload))
    sender.start()
    sender.join()
