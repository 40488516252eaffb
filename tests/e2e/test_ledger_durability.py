"""No worker for five minutes while calls keep coming: every answered call is still recorded once
the worker is back (nothing trimmed, nothing dropped, nothing doubled)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import redis

from access.grants import services as grants
from access.usage.models import UsageRecord
from audit.models import AuditEvent
from bench import mock_openai
from console.config import BASE_DIR
from console.embedded import free_port
from tests.e2e.conftest import start_uvicorn, stop, wait_for, wait_for_port

pytestmark = pytest.mark.e2e
DOWN_S = 300
RATE_S = 0.05  # a call every 50 ms from one client: ~6,000 calls while the worker is away


@pytest.mark.timeout(DOWN_S + 300)
def test_a_worker_down_for_five_minutes_under_load_loses_nothing(transactional_db, process_env, mock_backend, people):
    # Its own Redis database: its broker queue has no worker until we start one, its stream is its own.
    base, _db = process_env["REDIS_URL"].rsplit("/", 1)
    env = process_env | {"REDIS_URL": f"{base}/5"}
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    port = free_port()
    web = start_uvicorn("console.asgi:application", port, env)
    worker = None
    try:
        deployment, _ = mock_openai.register("steady-chat", mock_backend)
        user = people["dept_user"]
        grant = grants.create_grant(people["admin"], user=user, models=[deployment.model], duration_days=1)
        _key, plaintext = grants.create_key(user, grant=grant, name="steady")
        wait_for_port(port, web)
        body = json.dumps({"model": "steady-chat", "messages": [{"role": "user", "content": "hi"}]}).encode()
        headers = {"Authorization": f"Bearer {plaintext}", "Content-Type": "application/json"}
        answered: list[str] = []

        def load() -> None:
            deadline = time.monotonic() + DOWN_S
            while time.monotonic() < deadline:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body, headers)
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        if response.status == 200:
                            answered.append(response.headers["x-request-id"])
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(RATE_S)

        client = threading.Thread(target=load)
        client.start()
        client.join()
        assert len(answered) > DOWN_S / RATE_S / 4 and not UsageRecord.objects.filter(request_id__in=answered).exists()

        worker = subprocess.Popen(
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
                "back@%h",
                "-l",
                "WARNING",
            ],
            env=env,
            cwd=BASE_DIR,
        )
        wait_for(
            lambda: UsageRecord.objects.filter(request_id__in=answered).count() == len(answered),
            180,
            f"all {len(answered)} answered calls in the ledger",
            every=1,
        )
        assert UsageRecord.objects.filter(request_id__in=answered).count() == len(set(answered))
        events = AuditEvent.objects.filter(action="gateway.request", request_id__in=answered)
        assert events.count() == len(answered) == events.values("request_id").distinct().count()
    finally:
        for proc in (worker, web):
            if proc is not None:
                stop(proc)
