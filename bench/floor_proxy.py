"""The floor for bench/gateway.py: a bare pass-through proxy on the gateway's own stack (an ASGI
app under uvicorn, aiohttp to the upstream with the gateway's session settings) and nothing else:
no key, no quota, no route table, no ledger. What the gateway costs above it is its own work.

    BENCH_UPSTREAM=http://127.0.0.1:PORT .venv/bin/python -m uvicorn bench.floor_proxy:app --port N
"""

from __future__ import annotations

import os

import aiohttp

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8000")
_session: aiohttp.ClientSession | None = None


async def app(scope: dict, receive, send) -> None:
    global _session
    if scope["type"] != "http":
        return
    if _session is None:  # on the server's event loop, as the gateway makes its own
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=300),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    async with _session.post(UPSTREAM + scope["path"], data=body, headers=headers) as resp:
        content_type = resp.headers.get("Content-Type", "application/json").encode()
        await send({"type": "http.response.start", "status": resp.status, "headers": [(b"content-type", content_type)]})
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
