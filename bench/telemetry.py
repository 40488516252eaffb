"""Live telemetry at fleet scale on this machine: 100 simulated nodes × 8 GPUs publish at 1 Hz
through the agent's real code path (probe → message → channel layer), a real uvicorn web process
fans them out, and 200 websocket clients subscribed to the fleet view measure how old each
sample is when it reaches them. GPUs are NVML test doubles (no GPU here). Uses a throwaway
database (bench_telemetry).

    .venv/bin/python bench/telemetry.py [--quick] [--nodes 100] [--gpus 8] [--clients 200]

Ends with one JSON line: p50_ms, p99_ms (sample-to-client latency), web_cpu_pct (the web
process, % of one core), agent_cpu_pct_per_gpu (the agent's sampling cost per GPU at 1 Hz).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402


def _agents(n: int, gpus: int, redis_url: str, publisher=None) -> list:
    from fleet.agent.runtime import Agent, Identity
    from tests.nvml_test_double import NvmlTestDouble

    agents = []
    for i in range(n):
        agent = Agent(
            name=f"sim-{i}",
            redis_url=redis_url,
            state_dir=Path(tempfile.gettempdir()),
            nvml=NvmlTestDouble(gpus=gpus),
            publisher=publisher,
        )
        agent.identity = Identity(100000 + i, agent.name, "bench")
        agents.append(agent)
    return agents


def agent_cost(gpus: int, redis_url: str, ticks: int) -> float:
    """CPU of one agent's tick (sample NVML + host, build, publish, roll up) per GPU, in % of a core at 1 Hz."""
    from fleet.protocol import telemetry

    agent = _agents(1, gpus, redis_url)[0]
    rollup = telemetry.MinuteRollup(0)
    topics = ("telemetry.node.100000", "telemetry.bench-agent-cost")
    for _ in range(20):  # warm up
        agent.publisher.publish(topics, agent.sample()).result()
    start = time.process_time()
    for _ in range(ticks):
        message = agent.sample()
        agent.publisher.publish(topics, message)
        rollup.add(message)
    agent.publisher.publish(topics, agent.sample()).result()  # the background sends are CPU too
    per_tick = (time.process_time() - start) / ticks
    return 100 * per_tick / gpus


def simulate(nodes: int, gpus: int, redis_url: str, seconds: float, ready) -> None:
    """All simulated nodes in one process, each on its own 1 Hz phase, one shared publisher."""
    from fleet.agent.runtime import layer_publisher

    publisher = layer_publisher(redis_url)
    agents = _agents(nodes, gpus, redis_url, publisher)
    ready.wait()
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        for i, agent in enumerate(agents):
            due = start + k + i / nodes
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            publisher.publish((f"telemetry.node.{agent.identity.node_id}", "telemetry.fleet"), agent.sample())
        k += 1


def clients(url: str, cookie: str, n: int, seconds: float, warmup: float, ready, out) -> None:
    import websockets

    latencies: list[float] = []
    counts = {"frames": 0, "messages": 0}

    async def one(origin: str) -> None:
        async with websockets.connect(
            url, origin=origin, additional_headers={"Cookie": cookie}, max_size=None, open_timeout=60
        ) as ws:
            await ws.send(json.dumps({"action": "subscribe", "topic": "telemetry.fleet"}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            connected.append(1)
            measure_from = None
            while True:
                frame = json.loads(await ws.recv())
                now = time.time()
                if measure_from is None:
                    measure_from = now + warmup
                if now < measure_from:
                    continue
                if now > measure_from + seconds:
                    return
                items = frame["data"] if frame["type"] == "batch" else [frame["data"]]
                counts["frames"] += 1
                counts["messages"] += len(items)
                latencies.extend(now - m["ts"] for m in items)

    connected: list[int] = []

    async def main() -> None:
        origin = url.replace("ws://", "http://").rsplit("/ws/", 1)[0]
        tasks = [asyncio.create_task(one(origin)) for _ in range(n)]
        while len(connected) < n:
            await asyncio.sleep(0.1)
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()
        ready.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    latencies.sort()
    out.put(
        {
            "n": len(latencies),
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99) - 1],
            **counts,
        }
    )


def main(args) -> dict:
    import django

    django.setup()
    import psutil
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from access.people.choices import Role
    from access.people.models import User
    from console.embedded import free_port

    redis_url = os.environ["REDIS_URL"]
    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_telemetry"  # not test_fleet: `make test` may be running
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    web = None
    try:
        admin = User.objects.create(username="bench-admin", role=Role.ADMIN)
        client = Client()
        client.force_login(admin)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        db_url = os.environ["DATABASE_URL"].rsplit("/", 1)
        port = free_port()
        env = os.environ | {"DATABASE_URL": f"{db_url[0]}/{connection.settings_dict['NAME']}"}
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "console.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--lifespan",
                "off",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=ROOT,
        )
        time.sleep(3)

        cost = agent_cost(args.gpus, redis_url, 200 if args.quick else 1000)

        measure, warmup = (15.0, 5.0) if args.quick else (60.0, 10.0)
        ctx = mp.get_context("spawn")
        ready, out = ctx.Event(), ctx.Queue()
        sim = ctx.Process(target=simulate, args=(args.nodes, args.gpus, redis_url, warmup + measure + 10, ready))
        cli = ctx.Process(
            target=clients, args=(f"ws://127.0.0.1:{port}/ws/", cookie, args.clients, measure, warmup, ready, out)
        )
        sim.start()
        cli.start()
        ready.wait(120)
        web_proc = psutil.Process(web.pid)
        time.sleep(warmup)
        cpu0, t0 = web_proc.cpu_times(), time.monotonic()
        time.sleep(measure)
        cpu1, t1 = web_proc.cpu_times(), time.monotonic()
        result = out.get(timeout=120)
        cli.join(30)
        sim.terminate()
        web_cpu = 100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0)
        return {
            "nodes": args.nodes,
            "gpus_per_node": args.gpus,
            "clients": args.clients,
            "messages_per_client_per_s": round(result["messages"] / args.clients / measure, 1),
            "frames_per_client_per_s": round(result["frames"] / args.clients / measure, 1),
            "p50_ms": round(result["p50"] * 1000, 1),
            "p99_ms": round(result["p99"] * 1000, 1),
            "web_cpu_pct": round(web_cpu, 1),
            "agent_cpu_pct_per_gpu": round(cost, 4),
        }
    finally:
        if web is not None:
            web.terminate()
            try:
                web.wait(10)
            except subprocess.TimeoutExpired:  # still draining websockets
                web.kill()
                web.wait()
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a run under 60 s")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args()
    servers.run(lambda: main(args), redis_db=2)
