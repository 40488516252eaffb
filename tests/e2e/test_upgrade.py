"""An upgrade keeps the data: a database made and filled by the previous release (its own code,
from git history) is migrated by this one, and every row, the audit chain and an old key survive."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import pytest

from console.config import BASE_DIR

pytestmark = pytest.mark.e2e

# The commit before this release's first migration: the release a site upgrades from.
PREVIOUS_RELEASE = "76d5d47b0980f0d8b568e726339b6f86644b5caa"

FILL = """
import json
from access.grants import services as grants
from access.people.choices import Role
from access.people.models import Department, User
from access.usage.models import UsageRecord
from audit.models import AuditEvent
from django.utils import timezone

dept = Department.objects.create(name="Cardiology", slug="cardiology")
admin = User.objects.create(username="old-admin", role=Role.ADMIN)
user = User.objects.create(username="old-user", role=Role.DEPT_USER, department=dept)
from fleet.catalog.models import ModelArtifact
model = ModelArtifact.objects.create(name="old-model", path="/nonexistent/old-model", config={})
grant = grants.create_grant(admin, user=user, models=[model], duration_days=30)
key, plaintext = grants.create_key(user, grant=grant, name="old-key")
for i in range(3):
    UsageRecord.objects.create(created_at=timezone.now(), user=user, department=dept, model="m", endpoint="chat",
                               status=200, latency_ms=1.0, input_sha256="0" * 64, request_id=f"old-{i}")
for rid in ("", "", "twice", "twice"):  # rows this release's one-row-per-call rule must still keep
    UsageRecord.objects.create(created_at=timezone.now(), user=user, model="m", endpoint="chat", status=200,
                               latency_ms=1.0, input_sha256="0" * 64, request_id=rid)
print("RESULT", json.dumps({"key": plaintext}))
"""

SNAPSHOT = """
import json
from access.grants.models import ApiKey, Grant
from access.people.models import User
from access.usage.models import UsageRecord
from audit.models import AuditEvent
head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
print("RESULT", json.dumps(default=str, obj={
    "users": sorted(User.objects.values_list("username", flat=True)),
    "grants": Grant.objects.count(),
    "keys": sorted(ApiKey.objects.values_list("prefix", "digest")),
    "usage": sorted(UsageRecord.objects.values_list("id", "user_id", "created_at", "status")),
    "audit_head": head,
}))
"""


def _result(completed: subprocess.CompletedProcess) -> dict:
    assert completed.returncode == 0, completed.stdout + completed.stderr
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_the_previous_release_database_migrates_with_its_data_intact(process_env, fresh_database, tmp_path):
    archive = subprocess.run(["git", "-C", str(BASE_DIR), "archive", PREVIOUS_RELEASE], capture_output=True)
    if archive.returncode != 0:
        pytest.fail(
            f"the previous release {PREVIOUS_RELEASE[:8]} is not in this clone's history: clone without --depth"
        )
    previous = tmp_path / "previous"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(previous, filter="data")

    env = process_env | {"DATABASE_URL": fresh_database, "FLEET_DATA_DIR": str(tmp_path / "data")}

    def manage(tree, *args: str) -> subprocess.CompletedProcess:
        # the tree's own manage.py first on sys.path: the previous release runs its own code
        return subprocess.run(
            [sys.executable, str(tree / "manage.py"), *args], env=env, cwd=tree, capture_output=True, text=True
        )

    assert manage(previous, "migrate", "--noinput").returncode == 0
    old_key = _result(manage(previous, "shell", "-c", FILL))["key"]
    before = _result(manage(previous, "shell", "-c", SNAPSHOT))

    migrated = manage(BASE_DIR, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    after = _result(manage(BASE_DIR, "shell", "-c", SNAPSHOT))
    assert after == before  # every row, and the chain's head, as they were
    verify = manage(BASE_DIR, "audit_verify")
    assert verify.returncode == 0 and verify.stdout.startswith("OK:"), verify.stdout + verify.stderr
    check = (
        "import hashlib, json; from access.gateway import keys; "
        f"plaintext, prefix = keys.parse_bearer(b'Bearer ' + {old_key!r}.encode()); entry = keys.load(prefix); "
        "print('RESULT', json.dumps(entry.digest == hashlib.sha256(plaintext.encode()).hexdigest()))"
    )
    assert _result(manage(BASE_DIR, "shell", "-c", check)) is True  # the old key still opens the gateway
    repeats = (
        "from access.usage.models import UsageRecord as U; import json; "
        "ids = U.objects.filter(request_id__startswith='twice').values_list('request_id', flat=True); "
        "print('RESULT', json.dumps(sorted(ids)))"
    )
    assert _result(manage(BASE_DIR, "shell", "-c", repeats)) == ["twice", "twice#2"]
