"""The real processes: Celery worker, ASGI server with websockets, and the run command itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import websockets
import websockets.exceptions
from django.test import Client

import audit
from access.people.choices import Role
from audit.tasks import verify_chain_task
from console.config import BASE_DIR
from tests.conftest import make_user
from tests.e2e.conftest import free_port, record_in_own_connection

pytestmark = pytest.mark.e2e


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def test_a_real_celery_worker_verifies_the_chain(transactional_db, celery_worker_process):
    make_user("someone", Role.AUDITOR)
    audit.record(None, "test.event", None)
    result = verify_chain_task.delay().get(timeout=60)
    assert result["ok"] is True and result["checked"] == 2


def test_the_server_refuses_an_anonymous_websocket(transactional_db, live_server_url):
    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(live_server_url.replace("http", "ws") + "/ws/", origin="http://127.0.0.1"):
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(go())


def test_a_signed_in_user_gets_live_events_only_on_allowed_topics(transactional_db, live_server_url):
    admin = make_user("admin", Role.ADMIN)
    dept = make_user("nurse", Role.NONE)
    admin_cookie, dept_cookie = _session_cookie(admin), _session_cookie(dept)

    async def go():
        url = live_server_url.replace("http", "ws") + "/ws/"
        async with websockets.connect(url, origin="http://127.0.0.1", additional_headers={"Cookie": dept_cookie}) as ws:
            await ws.send(json.dumps({"action": "subscribe", "topic": "audit"}))
            assert json.loads(await ws.recv())["error"] == "forbidden"
        async with websockets.connect(
            url, origin="http://127.0.0.1", additional_headers={"Cookie": admin_cookie}
        ) as ws:
            await ws.send(json.dumps({"action": "subscribe", "topic": "audit"}))
            assert json.loads(await ws.recv()) == {"type": "subscribed", "topic": "audit"}
            await asyncio.to_thread(record_in_own_connection, admin, "test.live")
            # The sign-ins above publish "auth.login" a moment later, so frames are read until ours
            # comes; events published together leave as one "batch" frame (console.live.publish_soon).
            seen: list[str] = []
            async with asyncio.timeout(5):
                while "test.live" not in seen:
                    message = json.loads(await ws.recv())
                    assert message["topic"] == "audit"
                    items = message["data"] if message["type"] == "batch" else [message["data"]]
                    seen += [e["action"] for e in items]

    asyncio.run(go())


def test_the_run_command_serves_the_login_page_and_ctrl_c_leaves_nothing(tmp_path: Path):
    """`make run` on a fresh data directory with no DATABASE_URL/REDIS_URL: embedded servers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {
        "FLEET_DATA_DIR": str(tmp_path / "data"),
        "FLEET_ADMIN_PASSWORD": "Run-command-test-pass-1",
        "FLEET_WORKER_CONCURRENCY": "1",
        "FLEET_METRICS_TOKEN": "run-test-scrape",
        "FLEET_AGENT_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.launch", "run", "--port", str(port)],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        body, deadline = "", time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(0.3)
        assert "Sign in" in body, proc.stdout.read() if proc.poll() is not None else "no login page"
        # This machine's agent joins by itself: a fresh install shows one live node.
        scrape = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer run-test-scrape"}
        )
        metrics, deadline = "", time.monotonic() + 60
        while 'fleet_nodes{state="online"} 1' not in metrics and time.monotonic() < deadline:
            time.sleep(0.5)
            with urllib.request.urlopen(scrape, timeout=5) as response:
                metrics = response.read().decode()
        assert 'fleet_nodes{state="online"} 1' in metrics, metrics

        # One child killed is restarted while its siblings keep running (one at a time, each of them).
        state_file = tmp_path / "data" / "supervisor.json"

        def parts() -> dict:
            return json.loads(state_file.read_text())["parts"]

        for name in ("worker", "beat", "agent", "agents", "web"):
            before = parts()
            os.kill(before[name]["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now = parts()
                if now[name]["state"] == "running" and now[name]["restarts"] == before[name]["restarts"] + 1:
                    break
                time.sleep(0.1)
            assert now[name]["pid"] not in (None, before[name]["pid"]), now
            assert all(now[other]["pid"] == before[other]["pid"] for other in now if other != name), (before, now)
        health, deadline = {}, time.monotonic() + 60
        while time.monotonic() < deadline and not health:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    health = json.load(response)
            except OSError:
                time.sleep(0.3)
        assert {name: part["restarts"] for name, part in health["parts"].items()} == {
            "web": 1,
            "worker": 1,
            "beat": 1,
            "agent": 1,
            "agents": 1,
            "postgres": 0,
            "redis": 0,
        }, health
        # the tree: launcher → web, worker (+ pool), beat, agent; embedded postgres and redis are daemons
        family = psutil.Process(proc.pid).children(recursive=True)
        data_procs = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
        assert len(family) >= 4 and data_procs, "web/worker/beat and the embedded servers should run"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output
        survivors = [p for p in family + data_procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert survivors == [], [p.cmdline() for p in survivors]
        assert "First admin 'admin' created" in output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
