"""What the gateway adds to a call, against LiteLLM's proxy, in front of the same fast mock backend.

    .venv/bin/python bench/gateway.py [--quick]

Starts, on this machine: the mock OpenAI backend (bench.mock_openai), the console's ASGI server
(one uvicorn process, the gateway mounted at /v1, key check + Redis quota check + usage ledger and
audit events all on: the key and its department have quotas set), and LiteLLM's proxy (its own
virtual environment under ~/.cache/fleet-console/bench/litellm, created on first use; no database,
one worker). A Celery worker writes the ledger, as in `make run`. Uses a throwaway database (bench_gateway).

- overhead_p50_ms / overhead_p99_ms: at concurrency 1, latency through the gateway minus latency
  straight to the backend (requests interleaved across the four targets); litellm_overhead_* alike.
- rps / rps_litellm / rps_direct: completed requests per second at concurrency 32.
- ttft_overhead_p99_ms: streams at concurrency 8, p99 time to the first chunk through the gateway
  minus straight to the backend; ttft_overhead_p99_ms_litellm alike.
- gateway_cpu_ms_per_request: the console process's CPU time during the rps run / requests.
- overhead_over_floor_p50_ms / _p99_ms, ttft_overhead_over_floor_p99_ms, rps_floor: against the floor,
  a bare pass-through proxy on the same stack (bench.floor_proxy: uvicorn, aiohttp with the
  gateway's session settings; no key, quota, routes or ledger), interleaved in the same run.

    .venv/bin/python bench/gateway.py --web 2 --workers 2 [--quick]

The scale-out run instead (README "Scaling out"): the mock backend, N web processes and M Celery
workers on one database and Redis, calls at concurrency 32 dealt round-robin over the web processes.
- rps_one_web / rps_<N>_web: calls per second through the first web process alone, then through all
  N, in the same run (on two cores the gain is bounded: the load generator and the workers share them).
- answered / ledger_rows / ledger_request_ids: calls answered 200 (warm-up included) against the
  ledger's rows for the key once the workers drained it, and their distinct request ids: all three
  equal means none lost and none written twice.
- revoked_refused_s / revoked_refused_max_s: from the revocation to each web process's first 401.
Ends with one JSON line of these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402

LITELLM_VENV = Path.home() / ".cache" / "fleet-console" / "bench" / "litellm"
MODEL = "bench-chat"
LITELLM_KEY = "sk-" + os.urandom(16).hex()  # its master key (it refuses to start without one); no database
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello, how are you today?"}], "max_tokens": 16}


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print("creating LiteLLM's environment (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def _free_port() -> int:
    from console.embedded import free_port

    return free_port()


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.2)
    raise TimeoutError(url)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def _one(session, url: str, headers: dict, body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {(await resp.read())[:300]!r}")
    return (time.perf_counter() - started) * 1000


async def latency_c1(targets: dict[str, tuple[str, dict]], n: int) -> dict[str, list[float]]:
    import aiohttp

    body = json.dumps(BODY).encode()
    out: dict[str, list[float]] = {name: [] for name in targets}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for url, headers in targets.values():  # warm up connections and caches
            for _ in range(20):
                await _one(session, url, headers, body)
        for _ in range(n):
            for name, (url, headers) in targets.items():
                out[name].append(await _one(session, url, headers, body))
    return out


async def throughput(url: str, headers: dict, concurrency: int, seconds: float) -> float:
    import aiohttp

    body = json.dumps(BODY).encode()
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(concurrency):
            await _one(session, url, headers, body)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await _one(session, url, headers, body)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


async def ttfts(url: str, headers: dict, concurrency: int, n: int) -> list[float]:
    import aiohttp

    body = json.dumps(BODY | {"stream": True}).encode()
    results: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(concurrency):
            await servers.first_byte_ms(session, url, headers, body)

        async def worker(count: int) -> None:
            for _ in range(count):
                results.append(await servers.first_byte_ms(session, url, headers, body))

        await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return results


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Terminate every process, then wait for each (killed after 10 s)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def bench_key(mock_port: int) -> tuple[Any, Any, str]:
    """The bench's admin, and a department user's key for the mock model: every quota set, none
    binding (the gateway checks them all the same)."""
    from access.grants import services as grants
    from access.people.choices import Role
    from access.people.models import Department, User
    from bench import mock_openai

    department = Department.objects.create(name="Bench", slug="bench")
    admin = User.objects.create(username="bench-admin", role=Role.ADMIN)
    user = User.objects.create(username="bench-user", role=Role.DEPT_USER, department=department)
    deployment, _ = mock_openai.register(MODEL, mock_port)
    big = {"requests_per_minute": 10**9, "tokens_per_minute": 10**9}
    big |= {"tokens_per_day": 10**12, "tokens_per_month": 10**12}
    grants.set_department_quota(admin, department, big)
    grant = grants.create_grant(admin, user=user, models=[deployment.model], duration_days=1, limits=big)
    key, plaintext = grants.create_key(user, grant=grant, name="bench", limits=big)
    return admin, key, plaintext


def main(quick: bool, streams_only: bool = False) -> dict:
    import django
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # a lighter load generator: less noise on 2 cores

    django.setup()
    import psutil
    from django.db import connection
    from django.test.utils import setup_test_environment

    from access.usage.models import UsageRecord

    litellm = ensure_litellm()
    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_gateway"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        mock_port, gw_port, ll_port, floor_port = _free_port(), _free_port(), _free_port(), _free_port()
        db_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"]
        env = os.environ | {"DATABASE_URL": db_url}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.mock_openai", "--port", str(mock_port), "--chunks", "16"],
                env=env,
                cwd=ROOT,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "console.asgi:application",
                    "--port",
                    str(gw_port),
                    "--lifespan",
                    "off",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env=env,
                cwd=ROOT,
            )
        )
        # the floor: the same server and HTTP client with nothing of the gateway's own work
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "bench.floor_proxy:app", "--port", str(floor_port)]
                + ["--lifespan", "off", "--log-level", "warning", "--no-access-log"],
                env=env | {"BENCH_UPSTREAM": f"http://127.0.0.1:{mock_port}"},
                cwd=ROOT,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "console",
                    "worker",
                    "-Q",
                    "console",
                    "--pool",
                    "solo",
                    "-n",
                    "bench-gw@%h",
                    "-l",
                    "WARNING",
                ],
                env=env,
                cwd=ROOT,
            )
        )
        config = work / "litellm.yaml"
        config.write_text(
            json.dumps(
                {
                    "model_list": [
                        {
                            "model_name": MODEL,
                            "litellm_params": {
                                "model": f"openai/{MODEL}",
                                "api_base": f"http://127.0.0.1:{mock_port}/v1",
                                "api_key": "unused",
                            },
                        }
                    ]
                }
            )
        )
        procs.append(
            subprocess.Popen(
                [str(litellm), "--config", str(config), "--port", str(ll_port), "--num_workers", "1"],
                env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
                | {
                    "LITELLM_MASTER_KEY": LITELLM_KEY,
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "LITELLM_TELEMETRY": "False",
                    "LITELLM_LOG": "ERROR",
                },
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=open(work / "litellm.log", "w"),
            )
        )

        _admin, _key, plaintext = bench_key(mock_port)

        _wait_http(f"http://127.0.0.1:{mock_port}/health", procs[0], 30)
        _wait_http(f"http://127.0.0.1:{gw_port}/healthz", procs[1], 60)
        _wait_http(f"http://127.0.0.1:{ll_port}/health/liveliness", procs[4], 180)

        json_headers = {"Content-Type": "application/json"}
        targets = {
            "direct": (f"http://127.0.0.1:{mock_port}/v1/chat/completions", json_headers),
            "floor": (f"http://127.0.0.1:{floor_port}/v1/chat/completions", json_headers),
            "gateway": (
                f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                json_headers | {"Authorization": f"Bearer {plaintext}"},
            ),
            "litellm": (
                f"http://127.0.0.1:{ll_port}/v1/chat/completions",
                json_headers | {"Authorization": f"Bearer {LITELLM_KEY}"},
            ),
        }
        if streams_only:  # for profiling the stream path (py-spy on the console's uvicorn)
            gw_proc, worker = psutil.Process(procs[1].pid), psutil.Process(procs[3].pid)
            cpu0, n = sum(gw_proc.cpu_times()[:2]), 4000 if quick else 40000
            wcpu0 = sum(worker.cpu_times()[:2])
            ttft = {"gateway": asyncio.run(ttfts(targets["gateway"][0], targets["gateway"][1], 8, n))}
            return {
                "ttft_p50_ms": round(pct(ttft["gateway"], 50), 3),
                "ttft_p99_ms": round(pct(ttft["gateway"], 99), 3),
                "gateway_cpu_ms_per_stream": round((sum(gw_proc.cpu_times()[:2]) - cpu0) / n * 1000, 3),
                "worker_cpu_ms_per_stream": round((sum(worker.cpu_times()[:2]) - wcpu0) / n * 1000, 3),
            }
        lat = asyncio.run(latency_c1(targets, 150 if quick else 1500))
        seconds = 3 if quick else 10
        gw_proc = psutil.Process(procs[1].pid)
        cpu0 = sum(gw_proc.cpu_times()[:2])
        rows0 = UsageRecord.objects.count()
        rps = asyncio.run(throughput(targets["gateway"][0], targets["gateway"][1], 32, seconds))
        cpu_s = sum(gw_proc.cpu_times()[:2]) - cpu0
        served = rps * seconds
        time.sleep(2)  # the ledger is queued every 0.25 s and written by the worker
        ledger_rows = UsageRecord.objects.count() - rows0
        rps_litellm = asyncio.run(throughput(targets["litellm"][0], targets["litellm"][1], 32, seconds))
        rps_direct = asyncio.run(throughput(targets["direct"][0], targets["direct"][1], 32, seconds))
        rps_floor = asyncio.run(throughput(targets["floor"][0], targets["floor"][1], 32, seconds))
        n_streams = 400 if quick else 2400
        ttft = {name: asyncio.run(ttfts(url, headers, 8, n_streams)) for name, (url, headers) in targets.items()}
        return {
            "overhead_over_floor_p50_ms": round(pct(lat["gateway"], 50) - pct(lat["floor"], 50), 3),
            "overhead_over_floor_p99_ms": round(pct(lat["gateway"], 99) - pct(lat["floor"], 99), 3),
            "floor_overhead_p50_ms": round(pct(lat["floor"], 50) - pct(lat["direct"], 50), 3),
            "rps_floor": round(rps_floor, 1),
            "ttft_overhead_over_floor_p99_ms": round(pct(ttft["gateway"], 99) - pct(ttft["floor"], 99), 3),
            "overhead_p50_ms": round(pct(lat["gateway"], 50) - pct(lat["direct"], 50), 3),
            "overhead_p99_ms": round(pct(lat["gateway"], 99) - pct(lat["direct"], 99), 3),
            "rps": round(rps, 1),
            "rps_litellm": round(rps_litellm, 1),
            "ttft_overhead_p99_ms": round(pct(ttft["gateway"], 99) - pct(ttft["direct"], 99), 3),
            "litellm_overhead_p50_ms": round(pct(lat["litellm"], 50) - pct(lat["direct"], 50), 3),
            "litellm_overhead_p99_ms": round(pct(lat["litellm"], 99) - pct(lat["direct"], 99), 3),
            "ttft_overhead_p99_ms_litellm": round(pct(ttft["litellm"], 99) - pct(ttft["direct"], 99), 3),
            "rps_direct": round(rps_direct, 1),
            "ttft_ms": {name: {"p50": round(pct(v, 50), 2), "p99": round(pct(v, 99), 2)} for name, v in ttft.items()},
            "direct_p50_ms": round(statistics.median(lat["direct"]), 3),
            "gateway_cpu_ms_per_request": round(cpu_s / served * 1000, 3) if served else None,
            "ledger_rows_during_rps": ledger_rows,
            "requests_during_rps": round(served),
        }
    finally:
        stop_all(procs)
        connection.creation.destroy_test_db(old_name, verbosity=0)


async def spread(urls: list[str], headers: dict, concurrency: int, seconds: float) -> tuple[int, float]:
    """Calls at ``concurrency`` for ``seconds``, the clients dealt round-robin over ``urls``:
    (every call answered 200, warm-up included; calls per second after the warm-up)."""
    import aiohttp

    body = json.dumps(BODY).encode()
    answered = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for i in range(concurrency):
            await _one(session, urls[i % len(urls)], headers, body)
            answered += 1
        measured = 0
        deadline = time.perf_counter() + seconds

        async def client(url: str) -> None:
            nonlocal answered, measured
            while time.perf_counter() < deadline:
                await _one(session, url, headers, body)
                answered += 1
                measured += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(urls[i % len(urls)]) for i in range(concurrency)))
        return answered, measured / (time.perf_counter() - started)


async def refused_after(urls: list[str], headers: dict, since: float, timeout: float) -> list[float]:
    """Seconds from ``since`` (perf_counter) until each of ``urls`` refuses the key (401)."""
    import aiohttp

    body = json.dumps(BODY).encode()
    out = []
    async with aiohttp.ClientSession() as session:
        for url in urls:
            while True:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 401:
                        out.append(time.perf_counter() - since)
                        break
                if time.perf_counter() - since > timeout:
                    out.append(float("inf"))
                    break
                await asyncio.sleep(0.005)
    return out


def scale_out(quick: bool, web: int, workers: int) -> dict:
    """Several web processes and workers on one database and Redis (README "Scaling out"): rps
    through one web process and through all of them, in the same run; ledger rows against calls
    answered across all of them (exactly equal: none lost, none written twice); a revoked key
    refused by every web process, and how soon."""
    import django
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    from access.grants import services as grants
    from access.usage.models import UsageRecord

    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = "bench_gateway_scale"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    procs: list[subprocess.Popen] = []
    try:
        mock_port, ports = _free_port(), [_free_port() for _ in range(web)]
        db_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"]
        env = os.environ | {"DATABASE_URL": db_url}
        procs.append(
            subprocess.Popen([sys.executable, "-m", "bench.mock_openai", "--port", str(mock_port)], env=env, cwd=ROOT)
        )
        for port in ports:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "console.asgi:application", "--port", str(port)]
                    + ["--lifespan", "off", "--log-level", "warning", "--no-access-log"],
                    env=env,
                    cwd=ROOT,
                )
            )
        for n in range(workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "console", "worker", "-Q", "console", "--pool", "solo"]
                    + ["-n", f"bench-gw{n}@%h", "-l", "WARNING"],
                    env=env,
                    cwd=ROOT,
                )
            )
        admin, key, plaintext = bench_key(mock_port)
        _wait_http(f"http://127.0.0.1:{mock_port}/health", procs[0], 30)
        for port, proc in zip(ports, procs[1:], strict=False):
            _wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {plaintext}"}
        urls = [f"http://127.0.0.1:{port}/v1/chat/completions" for port in ports]
        seconds = 4 if quick else 15
        warm, _ = asyncio.run(spread(urls, headers, 32, 1 if quick else 3))  # every process, its caches
        answered_one, rps_one = asyncio.run(spread(urls[:1], headers, 32, seconds))
        answered_all, rps_all = asyncio.run(spread(urls, headers, 32, seconds))
        answered = warm + answered_one + answered_all
        revoked_at = time.perf_counter()
        grants.revoke_key(admin, key)
        refused = asyncio.run(refused_after(urls, headers, revoked_at, 10))
        # the ledger drains through the workers; it must come to the calls answered, exactly
        rows = UsageRecord.objects.filter(key=key, status=200)
        deadline = time.monotonic() + 60
        while rows.count() < answered and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(1)  # a late double write would show here
        return {
            "web": web,
            "workers": workers,
            "rps_one_web": round(rps_one, 1),
            f"rps_{web}_web": round(rps_all, 1),
            "answered": answered,
            "ledger_rows": rows.count(),
            "ledger_request_ids": rows.values("request_id").distinct().count(),
            "revoked_refused_s": [round(s, 3) for s in refused],
            "revoked_refused_max_s": round(max(refused), 3),
        }
    finally:
        stop_all(procs)
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a run under 60 s (fewer requests)")
    parser.add_argument("--streams-only", action="store_true", help="only streams through the gateway, for a profiler")
    parser.add_argument("--web", type=int, default=0, help="N web processes (and --workers): the scale-out run")
    parser.add_argument("--workers", type=int, default=1, help="Celery workers for the scale-out run")
    args = parser.parse_args()
    if args.web:
        servers.run(lambda: scale_out(args.quick, args.web, args.workers), redis_db=3)
    else:
        servers.run(lambda: main(args.quick, args.streams_only), redis_db=3)
