"""Load a running vLLM instance the way vLLM's own serving benchmark does, and measure it.
Runs in the vLLM runtime (it has aiohttp): ``python benchmark.py spec.json``.

Prompts are synthetic: windows of exactly ``input_len`` token ids cut from text the server itself
tokenized (so every id is valid for its tokenizer); ``ignore_eos`` makes every answer exactly
``output_len`` tokens. Each sweep level (a concurrency, or a request rate with Poisson arrivals)
sends ``num_prompts`` streamed completions and reports request throughput, output tokens/s and
p50/p90/p99 of time to first token (TTFT), time per output token (TPOT), inter-token latency
(ITL) and end-to-end latency."""
from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Runners run in a runtime environment without the console installed: the line format comes from
# fleet/protocol/runner.py by path, the one module both sides share.
sys.path.insert(0, str(HERE.parent / "protocol"))
import aiohttp  # noqa: E402  (the vLLM runtime has it)
from runner import emit  # noqa: E402


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def token_pool(session: aiohttp.ClientSession, base: str, served: str) -> list[int]:
    text = (HERE / "calibration.txt").read_text()
    async with session.post(f"{base}/tokenize", json={"model": served, "prompt": text}) as response:
        response.raise_for_status()
        tokens = (await response.json())["tokens"]
    if len(tokens) < 16:
        raise SystemExit("the server's tokenizer returned too few tokens to build prompts from")
    return tokens


async def one(session: aiohttp.ClientSession, base: str, served: str, prompt: list[int], output_len: int) -> dict:
    body = {"model": served, "prompt": prompt, "max_tokens": output_len, "min_tokens": output_len,
            "ignore_eos": True, "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, last, gaps, tokens = None, None, [], 0
    try:
        async with session.post(f"{base}/v1/completions", json=body) as response:
            if response.status != 200:
                return {"ok": False, "error": f"HTTP {response.status}: {(await response.text())[:200]}"}
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if chunk.get("usage"):
                    tokens = chunk["usage"].get("completion_tokens", tokens)
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
    except (TimeoutError, aiohttp.ClientError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    end = time.perf_counter()
    # vLLM may put several tokens in one chunk when it runs ahead of the stream, so ITL (between
    # chunks, as vLLM's own benchmark counts it) is joined by TPOT: decode time per output token.
    tpot = (end - first) / (tokens - 1) if first is not None and tokens > 1 else None
    return {"ok": first is not None, "error": "no tokens came back", "ttft": (first or end) - start,
            "itl": gaps, "tpot": tpot, "e2el": end - start, "tokens": tokens}


async def level(session, base, served, prompts, spec, value, done_before, total) -> dict:
    """One sweep point: ``value`` is a concurrency or a request rate (requests/s)."""
    rng = random.Random(spec.get("seed", 0))
    semaphore = asyncio.Semaphore(int(value) if spec["mode"] == "concurrency" else len(prompts))
    results: list[dict] = []

    async def run(prompt):
        async with semaphore:
            results.append(await one(session, base, served, prompt, spec["output_len"]))
            if len(results) % max(1, len(prompts) // 10) == 0 or len(results) == len(prompts):
                emit(progress=round(100 * (done_before + len(results)) / total, 1),
                     phase=f"{spec['mode']} {value}: {len(results)}/{len(prompts)}")

    start = time.perf_counter()
    tasks = []
    for prompt in prompts:
        tasks.append(asyncio.create_task(run(prompt)))
        if spec["mode"] == "rate":
            await asyncio.sleep(rng.expovariate(value))
    await asyncio.gather(*tasks)
    duration = time.perf_counter() - start
    ok = [r for r in results if r["ok"]]
    ms = lambda xs, q: None if not xs else round(1000 * percentile(xs, q), 3)  # noqa: E731
    ttft, itl, e2el = [r["ttft"] for r in ok], [g for r in ok for g in r["itl"]], [r["e2el"] for r in ok]
    tpot = [r["tpot"] for r in ok if r["tpot"] is not None]
    point = {spec["mode"]: value, "completed": len(ok), "failed": len(results) - len(ok),
             "duration_s": round(duration, 3), "request_throughput": round(len(ok) / duration, 3),
             "output_throughput": round(sum(r["tokens"] for r in ok) / duration, 3)}
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):
        for q in (50, 90, 99):
            point[f"{name}_p{q}_ms"] = ms(values, q)
    errors = sorted({r["error"] for r in results if not r["ok"]})
    if errors:
        point["errors"] = errors[:3]
    print(json.dumps(point))
    return point


async def main_async(spec: dict) -> dict:
    base, served = spec["endpoint"].rstrip("/"), spec["served"]
    timeout = aiohttp.ClientTimeout(total=spec.get("request_timeout_s", 600))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        pool = await token_pool(session, base, served)
        rng = random.Random(spec.get("seed", 0))
        print(f"{len(pool)} tokens to cut prompts from; {spec['num_prompts']} prompts of {spec['input_len']} tokens "
              f"→ {spec['output_len']} tokens at each {spec['mode']} in {spec['levels']}")
        # Unmeasured warm-up requests first (as vLLM's own benchmark offers): the first calls of a
        # fresh server pay for compilation and caches that no later call sees.
        for _ in range(spec.get("warmups", 2)):
            await one(session, base, served, pool[: spec["input_len"]], spec["output_len"])
        total = spec["num_prompts"] * len(spec["levels"])
        points = []
        for i, value in enumerate(spec["levels"]):
            prompts = []
            for _ in range(spec["num_prompts"]):
                start = rng.randrange(len(pool))
                prompts.append([pool[(start + j) % len(pool)] for j in range(spec["input_len"])])
            points.append(await level(session, base, served, prompts, spec, value, i * spec["num_prompts"], total))
    return {"mode": spec["mode"], "input_len": spec["input_len"], "output_len": spec["output_len"],
            "num_prompts": spec["num_prompts"], "served": served, "points": points}


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    emit(progress=0, phase="preparing prompts")
    result = asyncio.run(main_async(spec))
    if not any(p["completed"] for p in result["points"]):
        print("every request failed")
        return 1
    emit(progress=100, phase="done", result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
