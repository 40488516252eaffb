"""The API against its own OpenAPI document: schemathesis with every check on, as a department
user, an auditor and an admin, destructive operations included, against a real server on a
throwaway database. Any 5xx, schema violation or undeclared status fails the test."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from console.config import BASE_DIR
from console.embedded import free_port
from tests.e2e.conftest import start_uvicorn, stop, wait_for_port

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Examples per operation. The admin goes last: they may change the other two (role, department).
PERSONAS = [("dept_user", 20), ("auditor", 20), ("admin", 50)]


# Run by `manage.py shell` on the throwaway database: the personas, each with a personal token.
SEED = """
import json, secrets
from access.people import services
from access.people.choices import Role
from access.people.models import Department, User
radiology = Department.objects.create(name="Radiology", slug="radiology")
tokens = {}
for name, role, department in [
    ("dept_user", Role.DEPT_USER, radiology), ("auditor", Role.AUDITOR, None), ("admin", Role.ADMIN, None)
]:
    user = User.objects.create_user(name, password=secrets.token_urlsafe(16), role=role, department=department)
    tokens[name] = services.create_token(user, name="contract", expires_in_days=None)[1]
print(json.dumps(tokens))
"""


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@pytest.fixture
def throwaway_server(process_env) -> Iterator[tuple[str, dict[str, str]]]:
    """A real uvicorn on a database of its own (made, migrated and dropped here) and a Redis
    database no worker of the suite reads, so what the fuzzer does touches nothing else."""
    name = f"contract_{secrets.token_hex(4)}"
    admin_url = process_env["DATABASE_URL"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = process_env | {
        "DATABASE_URL": _with_database(admin_url, name),
        "REDIS_URL": process_env["REDIS_URL"].rsplit("/", 1)[0] + "/9",
    }
    proc = None
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], env=env, cwd=BASE_DIR, check=True)
        seeded = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SEED],
            env=env,
            cwd=BASE_DIR,
            check=True,
            capture_output=True,
            text=True,
        )
        tokens = json.loads(seeded.stdout.strip().splitlines()[-1])
        port = free_port()
        proc = start_uvicorn("console.asgi:application", port, env)
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}", tokens
    finally:
        if proc is not None:
            stop(proc)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.timeout(900)  # three fuzzing runs: about 4 minutes here, longer on a loaded machine
def test_the_api_keeps_its_documented_contract_for_every_persona(throwaway_server, capsys, tmp_path):
    base, tokens = throwaway_server
    seed = int(os.environ.get("FLEET_CONTRACT_SEED") or secrets.randbelow(2**31))  # fresh unless reproducing
    cli = Path(sys.executable).with_name("schemathesis")
    for persona, examples in PERSONAS:
        started = time.monotonic()
        run = subprocess.run(
            [str(cli), "--config-file", str(CONFIG), "run", f"{base}/api/schema/?format=json", "--url", base]
            + ["-H", f"Authorization: Bearer {tokens[persona]}", "--checks", "all"]
            + ["--max-examples", str(examples), "--seed", str(seed), "--no-color"],
            cwd=tmp_path,  # its cache of past failures stays out of the checkout: each run starts fresh
            capture_output=True,
            text=True,
            timeout=600,
        )
        summary = next((line for line in reversed(run.stdout.splitlines()) if " generated" in line), "?")
        with capsys.disabled():  # the seed and counts belong in CI's log whether it passes or not
            print(
                f"\nschemathesis as {persona}: seed {seed}, {examples} examples per operation, "
                f"{summary.strip()} in {time.monotonic() - started:.0f} s"
            )
        assert run.returncode == 0, f"as {persona} (FLEET_CONTRACT_SEED={seed}):\n{run.stdout[-20000:]}{run.stderr}"
