"""Shared by the benches: run ``main`` against DATABASE_URL/REDIS_URL, or the embedded servers
`make run` uses (Redis on its own database number, off the run command's), then print its JSON line."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any


def run(main: Callable[[], dict], *, redis_db: int | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    os.environ.setdefault("FLEET_MODE", "local")
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        figures = main()
    else:
        from console import embedded
        from console.config import data_dir

        with embedded.services(data_dir(), log=lambda *_: None) as extra:
            if redis_db is not None:
                extra["REDIS_URL"] = extra["REDIS_URL"].rsplit("/", 1)[0] + f"/{redis_db}"
            os.environ.update(extra)
            figures = main()
    print(json.dumps(figures))


def wait_until(condition: Callable[[], Any], timeout: float, every: float = 0.02, what: str = "timed out") -> Any:
    """``condition()``'s first truthy value, polled every ``every`` s; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(what)


async def first_byte_ms(session: Any, url: str, headers: dict, body: bytes) -> float:
    """Time to the first byte of a streamed answer (aiohttp ``session``), reading it to the end."""
    started = time.perf_counter()
    first = None
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {(await resp.read())[:300]!r}")
        async for _chunk in resp.content.iter_any():
            if first is None:
                first = (time.perf_counter() - started) * 1000
    return first or 0.0
