"""Configuration from the environment: required production settings, check --deploy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

from console.config import BASE_DIR

PRODUCTION = {
    "FLEET_MODE": "production",
    "SECRET_KEY": "x9!" + "k" * 40 + "Qz#4-production-grade-secret-for-the-test",
    "ALLOWED_HOSTS": "console.example.org",
}


def _django(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLEET_", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE"))
    }
    base["FLEET_DATA_DIR"] = str(settings.DATA_DIR)
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=base | env,
        capture_output=True,
        text=True,
        cwd=BASE_DIR,
        timeout=120,
    )


def test_check_deploy_is_clean_under_production_settings():
    result = _django(PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr.upper().replace("RUNTIMEDIRWARNING", "")


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"])
def test_missing_production_settings_fail_at_start_naming_the_variable(missing):
    env = dict(PRODUCTION)
    env.pop(missing, None)
    if missing in ("DATABASE_URL", "REDIS_URL"):
        env[missing] = ""  # an empty value counts as unset
    result = _django(env, "check")
    assert result.returncode != 0
    assert f"The environment variable {missing} is required but not set" in result.stderr


def test_sqlite_is_refused():
    result = _django(PRODUCTION | {"DATABASE_URL": "sqlite:///x.db"}, "check")
    assert result.returncode != 0 and "DATABASE_URL must point at PostgreSQL" in result.stderr


def test_bad_values_are_named():
    result = _django(PRODUCTION | {"FLEET_DEBUG": "maybe"}, "check")
    assert "FLEET_DEBUG must be true or false" in result.stderr
    result = _django(PRODUCTION | {"FLEET_MODE": "staging"}, "check")
    assert "FLEET_MODE must be 'production' or 'local'" in result.stderr


def test_local_mode_generates_and_keeps_a_secret_key():
    key_file = settings.DATA_DIR / "secret_key"
    assert _django({"FLEET_MODE": "local"}, "check").returncode == 0
    assert key_file.exists() and oct(key_file.stat().st_mode)[-3:] == "600"
