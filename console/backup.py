"""One consistent bundle of everything a console needs to come back on a fresh machine.

A bundle is a gzip'd tar, readable only by its owner, holding:

    manifest.json         what is inside, each file's SHA-256, the chain's head, the schema version
    database.dump         pg_dump --format=custom (one snapshot: the rows are consistent together)
    audit-archive/...     the archived segments of the audit trail (the database references them)
    secrets/secret_key    Django's key in local mode (sessions, signed values)
    secrets/audit_signing_key.pem   the key that signs exports: without it old exports still verify,
                          new ones would be signed by a new key

Restoring refuses a database that already holds data unless told ``--force``, and checks every
file against the manifest before touching anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from audit import signing
from audit.models import AuditEvent
from console.config import data_dir

FORMAT = 1


class BackupError(Exception):
    """Something the operator must fix; the message says what."""


def _tool(name: str) -> str:
    """pg_dump / pg_restore: the embedded server's own (same version), else the one on PATH."""
    try:
        from pgserver._commands import POSTGRES_BIN_PATH  # the embedded server's binaries, when installed

        bundled = Path(POSTGRES_BIN_PATH) / name
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} was not found: install PostgreSQL's client tools (Debian: postgresql-client).")
    return found


def _database_url() -> str:
    db = settings.DATABASES["default"]
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise BackupError("DATABASE_URL is not set; run this through `make manage` or with the console's environment.")
    # The test runner may point Django at another database name than the URL's: use Django's.
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(db["NAME"])))


def _secrets() -> dict[str, Path]:
    return {"secret_key": data_dir() / "secret_key", "audit_signing_key.pem": signing.key_path()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _schema() -> dict[str, str]:
    latest: dict[str, str] = {}
    for app, name in MigrationRecorder.Migration.objects.values_list("app", "name").order_by("id"):
        latest[app] = name
    return latest


def backup(out: Path) -> dict[str, Any]:
    """Write the bundle to ``out``; returns its manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        subprocess.run(
            [_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={work / 'database.dump'}", _database_url()],
            check=True,
            capture_output=True,
        )
        members: dict[str, Path] = {"database.dump": work / "database.dump"}
        archive = Path(settings.FLEET_AUDIT_ARCHIVE_DIR)
        if archive.is_dir():
            for path in sorted(p for p in archive.rglob("*") if p.is_file()):
                members[f"audit-archive/{path.relative_to(archive)}"] = path
        for name, path in _secrets().items():
            if path.exists():
                members[f"secrets/{name}"] = path
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
            "schema": _schema(),
            "audit_head": {"seq": head[0], "hash": head[1]} if head else None,
            "files": {name: _sha256(path) for name, path in members.items()},
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
            for name, path in members.items():
                tar.add(path, arcname=name, recursive=False)
    return manifest


def _database_is_empty() -> bool:
    return "django_migrations" not in connection.introspection.table_names() or not _schema()


def restore(bundle: Path, *, force: bool = False) -> dict[str, Any]:
    """Bring a bundle up in this console's (empty) database and data dir; returns its manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with tarfile.open(bundle, mode="r:gz") as tar:
            tar.extractall(work, filter="data")
        try:
            manifest = json.loads((work / "manifest.json").read_text())
        except (FileNotFoundError, ValueError):
            raise BackupError(f"{bundle} is not a Fleet Console backup (no readable manifest.json).") from None
        if manifest.get("format") != FORMAT:
            raise BackupError(f"This bundle has format {manifest.get('format')}; this console reads {FORMAT}.")
        for name, digest in manifest["files"].items():
            path = work / name
            if not path.is_file() or _sha256(path) != digest:
                raise BackupError(f"{name} in the bundle is missing or does not match its checksum; nothing restored.")
        if not force and not _database_is_empty():
            raise BackupError("The database already holds a console; restore into an empty one (or pass --force).")
        # An empty database means a fresh install: the secrets it generated on first start protect
        # nothing yet, and are replaced by the bundle's.
        targets = {f"secrets/{name}": path for name, path in _secrets().items()}

        connection.close()  # pg_restore works through its own connection
        argv = [_tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={_database_url()}"]
        if force:
            argv += ["--clean", "--if-exists"]
        result = subprocess.run([*argv, str(work / "database.dump")], capture_output=True, text=True)
        if result.returncode != 0:
            raise BackupError(f"pg_restore failed: {result.stderr.strip()[-2000:]}")
        for name, path in targets.items():
            if name in manifest["files"]:
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(work / name, path)
                path.chmod(0o600)
        archive = Path(settings.FLEET_AUDIT_ARCHIVE_DIR)
        for name in manifest["files"]:
            if name.startswith("audit-archive/"):
                dest = archive / name.removeprefix("audit-archive/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(work / name, dest)
    return manifest
