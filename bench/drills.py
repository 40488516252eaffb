"""Fault drills: kill -9 each part of a running console under load and count what was lost.

    .venv/bin/python bench/drills.py [--quick]

Runs the product as `make run` does — the same supervisor, web (with the gateway), worker (prefork),
beat, this machine's agent, and its own embedded PostgreSQL and Redis in a throwaway data dir —
with the mock OpenAI backend as the upstream. Clients call the gateway without pause (plain and
streamed) while, one drill at a time, a part is killed with SIGKILL and the supervisor brings it
back. Afterwards every call a client saw answered 200 is looked up by its request id:

- answered_200: calls the clients saw succeed; ledger_rows / audit_events: of those, how many have
  their row and their `gateway.request` event; lost = answered - recorded; duplicates: rows or
  events beyond one per call.
- outage_s: the longest stretch in which the gateway answered no call with 200 (0 when every gap
  between answers stays under 0.5 s); recovered_s: kill to the part running again.
- Then, with no faults, the gateway at its maximum rate for 5 minutes (2 in --quick):
  `ledger_lag_s_max` (age of the oldest answered call not yet in the ledger and the trail,
  sampled every 0.5 s), `ledger_lag_s_end` and the calls per second it sustained.
vLLM is not in these drills (the mock backend stands in for it), so no vllm_* figures are printed.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "drill-chat"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
GAP_S = 0.5  # gaps between answers shorter than this are service as usual
DRILLS = ("web", "agents", "worker", "worker-child", "beat", "agent", "redis", "postgres")


class Load:
    """Clients calling the gateway in a loop, each answer logged as (time, status, request id)."""

    def __init__(self, url: str, key: str, concurrency: int) -> None:
        self.url, self.key, self.concurrency = url, key, concurrency
        self.answers: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> list[tuple[float, int, str]]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        answers, self.answers = self.answers, []
        return answers

    async def _run(self) -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        plain, streamed = json.dumps(BODY).encode(), json.dumps(BODY | {"stream": True}).encode()
        timeout = aiohttp.ClientTimeout(total=30)

        async def client(n: int) -> None:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                i = 0
                while not self._stop.is_set():
                    i += 1
                    stream = (i + n) % 2 == 0
                    try:
                        async with session.post(self.url, data=streamed if stream else plain, headers=headers) as r:
                            text = await r.read()
                            ok = r.status == 200 and (not stream or text.rstrip().endswith(b"data: [DONE]"))
                            status = 200 if ok else (r.status if r.status != 200 else 599)  # 599: cut short
                            self.answers.append((time.monotonic(), status, r.headers.get("x-request-id", "")))
                    except (TimeoutError, aiohttp.ClientError):
                        self.answers.append((time.monotonic(), 0, ""))
                        await asyncio.sleep(0.05)

        await asyncio.gather(*(client(n) for n in range(self.concurrency)))


def longest_gap(answers: list[tuple[float, int, str]], start: float, end: float) -> float:
    times = [start] + sorted(t for t, status, _ in answers if status == 200) + [end]
    gap = max(b - a for a, b in zip(times, times[1:], strict=False))
    return round(gap, 2) if gap >= GAP_S else 0.0


def main(quick: bool) -> dict:
    data = Path(tempfile.mkdtemp(prefix="fleet-drills-"))
    os.environ["FLEET_DATA_DIR"] = str(data)
    os.environ.setdefault("FLEET_MODE", "local")
    os.environ["DJANGO_SETTINGS_MODULE"] = "console.settings"
    for name in ("DATABASE_URL", "REDIS_URL"):  # its own embedded servers: the drills kill them
        os.environ.pop(name, None)
    from console import embedded, launch
    from console.supervisor import Supervisor

    with embedded.services(data, log=lambda *_: None) as extra:
        os.environ.update(extra)
        env = dict(os.environ) | {"FLEET_LEDGER_DRAIN_S": "2"}
        launch._manage(env, "migrate", "--noinput")
        import django

        django.setup()
        return _drive(env, data, embedded, launch, Supervisor, quick)


def _drive(env, data, embedded, launch, Supervisor, quick: bool) -> dict:  # noqa: N803 -- classes passed in
    import psutil
    import redis
    from django.db import connection

    from access.gateway import ledger
    from access.grants import services as grants
    from access.people.choices import Role
    from access.people.models import Department, User
    from access.usage.models import UsageRecord
    from audit.models import AuditEvent
    from bench import mock_openai

    mock_port, port = embedded.free_port(), embedded.free_port()
    mock = subprocess.Popen([sys.executable, "-m", "bench.mock_openai", "--port", str(mock_port)], env=env, cwd=ROOT)
    department = Department.objects.create(name="Drills", slug="drills")
    admin = User.objects.create(username="drill-admin", role=Role.ADMIN)
    user = User.objects.create(username="drill-user", role=Role.DEPT_USER, department=department)
    deployment, _ = mock_openai.register(MODEL, mock_port)
    big = {"requests_per_minute": 10**9, "tokens_per_minute": 10**9}
    grant = grants.create_grant(admin, user=user, models=[deployment.model], duration_days=1, limits=big)
    _key, plaintext = grants.create_key(user, grant=grant, name="drills", limits=big)

    children = launch.programs(env, data, "127.0.0.1", port)
    log = open(data / "console.log", "a")  # noqa: SIM115 -- closed with the run
    sup = Supervisor(children, env, watches=embedded.watches(data), state_file=data / "supervisor.json", out=log)
    sup.start()
    ticking = threading.Event()

    def tick() -> None:
        while not ticking.is_set():
            sup.tick()
            time.sleep(0.1)

    threading.Thread(target=tick, daemon=True).start()
    by_name = {p.name: p for p in children} | {w.name: w for w in sup.watches}
    load = Load(f"http://127.0.0.1:{port}/v1/chat/completions", plaintext, concurrency=8)
    client = redis.Redis.from_url(env["REDIS_URL"])
    settle_s = 60

    def wait_ready(timeout: float = 120) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read()
                return
            except Exception:
                time.sleep(0.2)
        raise TimeoutError("the console did not become ready")

    def settled() -> None:
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            try:
                if not client.xlen(ledger.STREAM) and not any((data / "ledger-spool").glob("*.jsonl")):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)

    def count(answers: list[tuple[float, int, str]]) -> dict:
        connection.close()  # PostgreSQL may have been killed under it
        rids = [rid for _, status, rid in answers if status == 200]
        rows = Counter(UsageRecord.objects.filter(request_id__in=rids).values_list("request_id", flat=True))
        events = Counter(
            AuditEvent.objects.filter(action="gateway.request", request_id__in=rids).values_list(
                "request_id", flat=True
            )
        )
        return {
            "answered_200": len(rids),
            "ledger_rows": len(rows),
            "audit_events": len(events),
            "lost": len(rids) - min(len(rows), len(events)),
            "duplicates": sum(n - 1 for n in rows.values()) + sum(n - 1 for n in events.values()),
        }

    def victim(name: str) -> int:
        if name == "worker-child":
            worker = by_name["worker"].proc
            kids = psutil.Process(worker.pid).children()
            return kids[0].pid
        if name == "redis":
            return embedded.EmbeddedRedis(data)._running_pid()
        if name == "postgres":
            from pgserver.utils import PostmasterInfo

            return PostmasterInfo.read_from_pgdata(data / "postgres").process.pid
        return by_name[name].proc.pid

    def running(name: str, pid: int, restarts: int) -> bool:
        if name == "worker-child":
            return len(psutil.Process(by_name["worker"].proc.pid).children()) >= 2  # the pool refills itself
        part = by_name[name]
        return part.state == "running" and part.restarts > restarts

    results: dict[str, dict] = {}
    try:
        wait_ready()
        load.start()
        time.sleep(3)  # warm up: connections, caches, the worker's pool
        load.stop()
        settled()
        for name in DRILLS:
            load.start()
            time.sleep(2)
            pid, restarts = victim(name), getattr(by_name.get(name), "restarts", 0)
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while not running(name, pid, restarts) and time.monotonic() - killed < 60:
                time.sleep(0.05)
            recovered = time.monotonic() - killed
            time.sleep(3)
            ended = time.monotonic()
            answers = load.stop()
            settled()
            results[name] = count(answers) | {
                "outage_s": longest_gap(answers, killed - 0.001, ended),
                "recovered_s": round(recovered, 2),
            }
            print(name, results[name], file=sys.stderr, flush=True)

        # No faults, at the gateway's maximum rate: how far behind does the ledger get?
        seconds = 120 if quick else 300
        lags: list[float] = []
        load.start()
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            first = client.xrange(ledger.STREAM, count=1)
            lag = time.time() - int(first[0][0].split(b"-")[0]) / 1000 if first else 0.0
            lags.append(max(lag, 0.0))
            time.sleep(0.5)
        answers = load.stop()
        sustained = sum(1 for _, status, _ in answers if status == 200) / (time.monotonic() - started)
        settled()
        steady = count(answers)
        last_quarter = lags[len(lags) * 3 // 4 :]
    finally:
        ticking.set()
        sup.stop()
        log.close()
        mock.terminate()
        mock.wait(10)
    total = {k: sum(r[k] for r in results.values()) for k in ("answered_200", "ledger_rows", "lost", "duplicates")} | {
        "outage_s_max": max(r["outage_s"] for r in results.values())
    }
    return {
        "drills": results,
        "total": total,
        "steady": steady | {"calls_per_s": round(sustained, 1)},
        "ledger_lag_s_max": round(max(lags), 2),
        "ledger_lag_s_last_quarter_max": round(max(last_quarter), 2),
        "calls_per_s": round(sustained, 1),
        "lost": total["lost"] + steady["lost"],
        "duplicates": total["duplicates"] + steady["duplicates"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the steady run lasts 2 minutes instead of 5")
    args = parser.parse_args()
    print(json.dumps(main(args.quick)))
