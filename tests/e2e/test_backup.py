"""Backup on one console, restore on a fresh one (empty database, empty data dir): the trail
verifies, the secrets are the same, and a key issued before the backup still calls the gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from django.core.management import call_command

from access.grants import services as grants
from audit import signing
from bench import mock_openai
from console.config import BASE_DIR
from console.embedded import free_port
from tests.e2e.conftest import stop, wait_for_port

pytestmark = pytest.mark.e2e

MANAGE = [sys.executable, str(BASE_DIR / "manage.py")]


def test_backup_then_restore_on_a_fresh_machine(process_env, fresh_database, mock_backend, people, tmp_path):
    deployment, _ = mock_openai.register("kept-chat", mock_backend)
    user = people["dept_user"]
    grant = grants.create_grant(people["admin"], user=user, models=[deployment.model], duration_days=9)
    _key, plaintext = grants.create_key(user, grant=grant, name="from-before")
    signing.public_key_b64()  # the signing key exists (made on first use)
    bundle = tmp_path / "fleet.tar.gz"
    call_command("backup", str(bundle))
    assert bundle.stat().st_mode & 0o077 == 0  # secrets inside: owner only

    # A fresh machine: an empty database and an empty data dir.
    fresh = tmp_path / "fresh"
    env = process_env | {"DATABASE_URL": fresh_database, "FLEET_DATA_DIR": str(fresh)}
    env.pop("FLEET_AUDIT_ARCHIVE_DIR", None)
    env.pop("FLEET_AUDIT_SIGNING_KEY", None)

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*MANAGE, *args], env=env, cwd=BASE_DIR, capture_output=True, text=True)

    restore = manage("restore", str(bundle))
    assert restore.returncode == 0, restore.stderr
    again = manage("restore", str(bundle))
    assert again.returncode != 0 and "already holds a console" in again.stderr  # nothing overwritten by mistake
    verify = manage("audit_verify")
    assert verify.returncode == 0 and verify.stdout.startswith("OK:"), verify.stdout + verify.stderr
    assert (fresh / "audit_signing_key.pem").read_bytes() == signing.key_path().read_bytes()

    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "console.asgi:application", "--port", str(port), "--lifespan", "off"],
        env=env,
        cwd=BASE_DIR,
    )
    try:
        wait_for_port(port, web)
        body = json.dumps({"model": "kept-chat", "messages": [{"role": "user", "content": "hi"}]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body,
            headers={"Authorization": f"Bearer {plaintext}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200 and json.load(response)["choices"]
    finally:
        stop(web)
