"""Live telemetry at fleet scale on this machine, through the node boundary: simulated nodes
(100, then 1,000) × 8 GPUs build samples with the agent's real code (probe → message) and send them
at 1 Hz over their own TLS websocket, with their own credential, to a real agent endpoint (uvicorn,
`console.asgi:agents`), which attributes and relays them into the channel layer; a real web process
fans them out and 200 websocket clients subscribed to the fleet view measure how old each sample
is when it reaches them. GPUs are NVML test doubles (no GPU here). Throwaway database
(bench_telemetry). Each phase warms up before it measures.

    .venv/bin/python bench/telemetry.py [--quick] [--nodes 100] [--many 1000] [--gpus 8] [--clients 200]

Ends with one JSON line: p50_ms, p99_ms, web_cpu_pct and agents_cpu_pct (% of one core) at --nodes;
p99_ms_1000, web_cpu_pct_1000 and agents_cpu_pct_1000 at --many; agent_cpu_pct_per_gpu (one
agent's sampling and sending cost per GPU at 1 Hz). sim_ and clients_cpu_pct are the load
generators' own CPU: on a small machine they compete with the console for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402


def _agents(n: int, gpus: int, url: str) -> list:
    from fleet.agent.runtime import Agent
    from tests.nvml_test_double import NvmlTestDouble

    state = Path(tempfile.gettempdir())
    return [Agent(name=f"sim-{i}", console_url=url, state_dir=state, nvml=NvmlTestDouble(gpus=gpus)) for i in range(n)]


def agent_cost(gpus: int, url: str, ticks: int) -> float:
    """CPU of one agent's tick (sample NVML + host, build, encode as the link sends it, roll up) per
    GPU, in % of a core at 1 Hz."""
    from fleet.agent.runtime import Identity
    from fleet.protocol import telemetry, wire

    agent = _agents(1, gpus, url)[0]
    agent.identity = Identity(1, agent.name, "unused")
    rollup = telemetry.MinuteRollup(0)
    for _ in range(20):  # warm up
        json.dumps({"kind": wire.TELEMETRY, "sample": agent.sample()})
    start = time.process_time()
    for _ in range(ticks):
        message = agent.sample()
        json.dumps({"kind": wire.TELEMETRY, "sample": message})
        rollup.add(message)
    return 100 * (time.process_time() - start) / ticks / gpus


def simulate(url: str, ca: str, credentials: list[tuple[int, str]], gpus: int, seconds: float, ready, go) -> None:
    """Every simulated node in one process: its own TLS websocket and credential, its own 1 Hz phase."""
    from websockets.asyncio.client import connect

    from fleet.agent.runtime import Identity
    from fleet.protocol import wire

    agents = _agents(len(credentials), gpus, url)
    for agent, (node_id, credential) in zip(agents, credentials, strict=True):
        agent.identity = Identity(node_id, agent.name, credential)
    context = ssl.create_default_context(cafile=ca)
    link_url = "wss" + url.removeprefix("https") + wire.LINK_PATH
    nodes = len(agents)

    async def node(i: int, agent, opened: asyncio.Semaphore, start: list[float]) -> None:
        async with opened:  # TLS handshakes a few dozen at a time
            ws = await connect(
                link_url,
                ssl=context,
                additional_headers={"Authorization": f"Bearer {agent.identity.credential}"},
                proxy=None,
                open_timeout=120,
            )
        connected.append(i)
        while not start:
            await asyncio.sleep(0.05)
        k, loop = 0, asyncio.get_running_loop()
        while loop.time() - start[0] < seconds:
            delay = start[0] + k + i / nodes - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(json.dumps({"kind": wire.TELEMETRY, "sample": agent.sample()}))
            k += 1
        await ws.close()

    connected: list[int] = []

    async def main() -> None:
        opened, start = asyncio.Semaphore(32), []
        tasks = [asyncio.create_task(node(i, a, opened, start)) for i, a in enumerate(agents)]
        while len(connected) < nodes:
            await asyncio.sleep(0.1)
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()
        ready.set()
        while not go.is_set():
            await asyncio.sleep(0.05)
        start.append(asyncio.get_running_loop().time())
        await asyncio.gather(*tasks)

    asyncio.run(main())


def clients(url: str, cookie: str, n: int, seconds: float, warmup: float, ready, out) -> None:
    """The browsers: each a websocket on the fleet view. One process holds them all, so it reads
    with uvloop and orjson and notes the arrival time before parsing (its own cost is not the
    console's latency)."""
    import orjson
    import uvloop
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
                # The window closes on time even when frames fall behind (a saturated machine).
                left = None if measure_from is None else measure_from + seconds - time.time()
                try:
                    raw = await asyncio.wait_for(ws.recv(decode=False), None if left is None else max(left, 0.01))
                except TimeoutError:
                    return
                now = time.time()
                frame = orjson.loads(raw)
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

    uvloop.run(main())
    latencies.sort()
    out.put(
        {
            "n": len(latencies),
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99) - 1],
            **counts,
        }
    )


WEB_FLAGS = ["--ws-per-message-deflate", "false"]  # as `make run` serves browsers (console/launch.py)


def _uvicorn(app: str, port: int, env: dict, *tls: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"]
        + ["--log-level", "warning", *tls],
        env=env,
        cwd=ROOT,
    )


def phase(args, nodes: int, credentials, urls: dict, cookie: str, procs: dict) -> dict:
    """One measurement: ``nodes`` simulated nodes, warmed up, then measured."""
    import psutil

    measure, warmup = (10.0, 5.0) if args.quick else (60.0, 15.0)
    ctx = mp.get_context("spawn")
    ready, go, clients_ready, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    sim = ctx.Process(
        target=simulate,
        args=(urls["agents"], urls["ca"], credentials[:nodes], args.gpus, warmup + measure + 15, ready, go),
    )
    cli = ctx.Process(target=clients, args=(urls["web"], cookie, args.clients, measure, warmup, clients_ready, out))
    sim.start()
    cli.start()
    if not ready.wait(300) or not clients_ready.wait(120):
        raise RuntimeError("the simulated nodes or the clients did not connect")
    go.set()
    watched = {name: psutil.Process(p.pid) for name, p in procs.items()}
    watched |= {"sim": psutil.Process(sim.pid), "clients": psutil.Process(cli.pid)}
    time.sleep(warmup)
    cpu0, t0 = {n: p.cpu_times() for n, p in watched.items()}, time.monotonic()
    time.sleep(measure)
    cpu1, t1 = {n: p.cpu_times() for n, p in watched.items()}, time.monotonic()
    result = out.get(timeout=180)
    cli.join(30)
    sim.terminate()
    sim.join(10)
    pct = {n: 100 * ((cpu1[n].user + cpu1[n].system) - (cpu0[n].user + cpu0[n].system)) / (t1 - t0) for n in watched}
    return result | {"measure": measure} | {f"{n}_cpu_pct": round(v, 1) for n, v in pct.items()}


def figures(phase_result: dict, clients: int, suffix: str = "") -> dict:
    """One phase's figures, named as the issue names them (``p99_ms``, ``p99_ms_1000``…)."""
    r = phase_result
    named = {
        "messages_per_client_per_s": round(r["messages"] / clients / r["measure"], 1),
        "p50_ms": round(r["p50"] * 1000, 1),
        "p99_ms": round(r["p99"] * 1000, 1),
        **{f"{part}_cpu_pct": r[f"{part}_cpu_pct"] for part in ("web", "agents", "sim", "clients")},
    }
    return {name + suffix: value for name, value in named.items()}


def main(args) -> dict:
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from access.people.choices import Role
    from access.people.models import User
    from console import tls
    from console.embedded import free_port
    from fleet.nodes.models import Node
    from fleet.nodes.services import digest
    from fleet.protocol import wire

    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_telemetry"  # not test_fleet: `make test` may be running
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    procs: dict[str, subprocess.Popen] = {}
    try:
        admin = User.objects.create(username="bench-admin", role=Role.ADMIN)
        client = Client()
        client.force_login(admin)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        secrets_ = [os.urandom(24).hex() for _ in range(max(args.nodes, args.many))]
        made = Node.objects.bulk_create(
            Node(name=f"sim-{i}", kind="gpu", agent_digest=digest(secret)) for i, secret in enumerate(secrets_)
        )
        credentials = [(n.pk, wire.credential(n.pk, secret)) for n, secret in zip(made, secrets_, strict=True)]
        db_url = os.environ["DATABASE_URL"].rsplit("/", 1)
        env = os.environ | {"DATABASE_URL": f"{db_url[0]}/{connection.settings_dict['NAME']}"}
        certs = tls.material()
        web_port, agents_port = free_port(), free_port()
        procs["web"] = _uvicorn("console.asgi:application", web_port, env, *WEB_FLAGS)
        procs["agents"] = _uvicorn(
            "console.asgi:agents", agents_port, env, "--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key)
        )
        time.sleep(4)
        urls = {
            "web": f"ws://127.0.0.1:{web_port}/ws/",
            "agents": f"https://127.0.0.1:{agents_port}",
            "ca": str(certs.ca),
        }
        cost = agent_cost(args.gpus, urls["agents"], 200 if args.quick else 1000)
        few = phase(args, args.nodes, credentials, urls, cookie, procs)
        many = phase(args, args.many, credentials, urls, cookie, procs)
        return {
            "nodes": args.nodes,
            "gpus_per_node": args.gpus,
            "clients": args.clients,
            **figures(few, args.clients),
            "frames_per_client_per_s": round(few["frames"] / args.clients / few["measure"], 1),
            "nodes_many": args.many,
            **figures(many, args.clients, "_1000"),
            "agent_cpu_pct_per_gpu": round(cost, 4),
            "cores": os.cpu_count(),
        }
    finally:
        for proc in procs.values():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # still draining websockets
                proc.kill()
                proc.wait()
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a shorter run (about a minute and a half)")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--many", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args()
    servers.run(lambda: main(args), redis_db=2)
