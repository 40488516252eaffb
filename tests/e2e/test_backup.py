"""Backup on one console, restore on a fresh one (empty database, empty data dir): the trail
verifies, the secrets are the same, and a key issued before the backup still calls the gateway."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.request
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from django.core.management import call_command
from django.db import connection

from access.grants import services as grants
from audit import signing
from bench import mock_openai
from console.config import BASE_DIR
from console.embedded import free_port
from tests.e2e.conftest import stop, wait_for_port

pytestmark = pytest.mark.e2e

MANAGE = [sys.executable, str(BASE_DIR / "manage.py")]


def test_backup_then_restore_on_a_fresh_machine(transactional_db, process_env, people, tmp_path):
    mock_port = free_port()
    mock = subprocess.Popen([sys.executable, "-m", "bench.mock_openai", "--port", str(mock_port)], cwd=BASE_DIR)
    restored_db = f"restore_{secrets.token_hex(4)}"
    web = None
    try:
        deployment, _ = mock_openai.register("kept-chat", mock_port)
        grant = grants.create_grant(
            people["admin"], user=people["dept_user"], models=[deployment.model], duration_days=9
        )
        _key, plaintext = grants.create_key(people["dept_user"], grant=grant, name="from-before")
        signing.public_key_b64()  # the signing key exists (made on first use)
        bundle = tmp_path / "fleet.tar.gz"
        call_command("backup", str(bundle))
        assert bundle.stat().st_mode & 0o077 == 0  # secrets inside: owner only

        # A fresh machine: an empty database and an empty data dir.
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{restored_db}"')
        fresh = tmp_path / "fresh"
        parts = urlsplit(process_env["DATABASE_URL"])
        env = process_env | {
            "DATABASE_URL": urlunsplit(parts._replace(path="/" + quote(restored_db))),
            "FLEET_DATA_DIR": str(fresh),
        }
        env.pop("FLEET_AUDIT_ARCHIVE_DIR", None)
        env.pop("FLEET_AUDIT_SIGNING_KEY", None)
        restore = subprocess.run(
            [*MANAGE, "restore", str(bundle)], env=env, cwd=BASE_DIR, capture_output=True, text=True
        )
        assert restore.returncode == 0, restore.stderr
        again = subprocess.run([*MANAGE, "restore", str(bundle)], env=env, cwd=BASE_DIR, capture_output=True, text=True)
        assert again.returncode != 0 and "already holds a console" in again.stderr  # nothing overwritten by mistake

        verify = subprocess.run([*MANAGE, "audit_verify"], env=env, cwd=BASE_DIR, capture_output=True, text=True)
        assert verify.returncode == 0 and verify.stdout.startswith("OK:"), verify.stdout + verify.stderr
        assert (fresh / "audit_signing_key.pem").read_bytes() == signing.key_path().read_bytes()

        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "console.asgi:application", "--port", str(port), "--lifespan", "off"],
            env=env,
            cwd=BASE_DIR,
        )
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
        if web is not None:
            stop(web)
        stop(mock)
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{restored_db}" WITH (FORCE)')
