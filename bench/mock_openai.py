"""A fast mock OpenAI backend (a stand-in for vLLM where the gateway's own cost must be visible).

    python -m bench.mock_openai --port 18000 [--chunks 8] [--chunk-delay-ms 0]

Serves /health, /v1/models, /v1/chat/completions (plain and SSE, with ``stream_options.include_usage``),
/v1/completions and /v1/embeddings with fixed answers, and /mock/stats: how many requests it saw
and how many streams the client abandoned (the gateway's disconnect test reads it).
``register(...)`` makes the console route a deployment to it (an online node and a Ready instance).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

STATS = {"requests": 0, "abandoned": 0, "last_body": None}


def _usage(body: dict, completion: int) -> dict:
    prompt = max(1, len(json.dumps(body.get("messages") or body.get("prompt") or body.get("input") or "")) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def app(scope, receive, send, *, chunks: int = 8, chunk_delay_s: float = 0.0) -> None:
    if scope["type"] != "http":
        return
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    STATS["requests"] += 1

    async def reply(status: int, payload: dict) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})

    if path == "/health":
        return await reply(200, {})
    if path == "/mock/stats":
        return await reply(200, STATS)
    if path == "/v1/models":
        return await reply(200, {"object": "list", "data": [{"id": "mock", "object": "model"}]})
    body = json.loads(raw or b"{}")
    STATS["last_body"] = body
    n = int(body.get("max_tokens") or chunks)
    delay = float(body.get("mock_chunk_delay_s", chunk_delay_s))
    created = int(time.time())
    if "mock_fail_for" in body and body["mock_fail_for"] == body.get("model"):  # a 500 before any byte
        return await reply(500, {"detail": "mock failure"})
    if body.get("mock_not_served"):  # as vLLM answers an endpoint its model does not serve
        return await reply(404, {"detail": "Not Found"})
    if path == "/v1/embeddings":
        return await reply(
            200,
            {
                "object": "list",
                "model": body.get("model"),
                "usage": _usage(body, 0),
                "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 0.5, 1.0]}],
            },
        )
    if path not in ("/v1/chat/completions", "/v1/completions"):
        return await reply(404, {"error": {"message": f"no route {path}"}})
    chat = path == "/v1/chat/completions"
    kind = "chat.completion" if chat else "text_completion"
    if not body.get("stream"):
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": "tok " * n}, "finish_reason": "length"}
            if chat
            else {"index": 0, "text": "tok " * n, "finish_reason": "length"}
        )
        return await reply(
            200,
            {
                "id": "cmpl-mock",
                "object": kind,
                "created": created,
                "model": body.get("model"),
                "choices": [choice],
                "usage": _usage(body, n),
            },
        )
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    gone = asyncio.ensure_future(receive())  # uvicorn answers http.disconnect when the client leaves
    try:
        for _ in range(n):
            if gone.done():
                STATS["abandoned"] += 1
                return
            delta = (
                {"index": 0, "delta": {"content": "tok "}, "finish_reason": None}
                if chat
                else {"index": 0, "text": "tok ", "finish_reason": None}
            )
            chunk = {
                "id": "cmpl-mock",
                "object": f"{kind}.chunk",
                "created": created,
                "model": body.get("model"),
                "choices": [delta],
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                    "more_body": True,
                }
            )
            if delay:
                await asyncio.sleep(delay)
        if include_usage:
            last = {
                "id": "cmpl-mock",
                "object": f"{kind}.chunk",
                "created": created,
                "model": body.get("model"),
                "choices": [],
                "usage": _usage(body, n),
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + json.dumps(last).encode() + b"\n\n",
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
    finally:
        gone.cancel()


def register(name: str, port: int, *, host: str = "127.0.0.1"):
    """An online node, a model, a running deployment called ``name`` and one Ready instance at the mock.

    The node's heartbeat is set an hour ahead so a liveness sweep in the same database leaves it be."""
    from datetime import timedelta

    from django.utils import timezone

    from fleet.catalog.models import ModelArtifact
    from fleet.deployments.choices import InstanceState
    from fleet.deployments.models import Deployment, Instance
    from fleet.nodes.choices import NodeState
    from fleet.nodes.models import Node

    node, _ = Node.objects.update_or_create(
        name=f"mock-{name}",
        defaults={"state": NodeState.ONLINE, "last_heartbeat": timezone.now() + timedelta(hours=1), "address": host},
    )
    model, _ = ModelArtifact.objects.get_or_create(name=f"mock-{name}", defaults={"path": f"/nonexistent/{name}"})
    deployment, _ = Deployment.objects.get_or_create(name=name, defaults={"model": model, "options": {}})
    instance, _ = Instance.objects.update_or_create(
        deployment=deployment,
        replica=0,
        defaults={"node": node, "port": port, "address": host, "state": InstanceState.READY},
    )
    return deployment, instance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    import uvicorn

    async def asgi(scope, receive, send):
        await app(scope, receive, send, chunks=args.chunks, chunk_delay_s=args.chunk_delay_ms / 1000)

    uvicorn.run(
        asgi,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="off",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


if __name__ == "__main__":
    main()
