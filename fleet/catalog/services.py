"""Side effects for registered models: register, describe, forget, and checksum in the background."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from celery import current_app
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

import audit
from console.actions import Actor, ServiceError, refuse_in_use
from console.live import publish
from fleet.catalog import artifacts
from fleet.catalog.artifacts import ArtifactError
from fleet.catalog.choices import ChecksumState, Sensitivity
from fleet.catalog.models import ModelArtifact, ModelFile, slug_validator
from fleet.protocol import tasks

if TYPE_CHECKING:
    from access.people.models import User

log = logging.getLogger(__name__)
EDITABLE = ("license", "notes", "tags", "sensitivity")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,39}$")


def _clean_tags(tags: Any) -> list[str]:
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list) or len(tags) > 20 or not all(isinstance(t, str) and TAG_RE.match(t) for t in tags):
        raise ServiceError("Tags: up to 20, each up to 40 letters, digits, spaces or . _ : / -", "tags")
    return sorted(set(tags))


def _public(artifact: ModelArtifact) -> dict:
    return {
        "name": artifact.name,
        "path": artifact.path,
        "architecture": artifact.architecture,
        "parameter_count": artifact.parameter_count,
        "weights_bytes": artifact.weights_bytes,
        "parent": artifact.parent.name if artifact.parent else None,
        **{k: getattr(artifact, k) for k in EDITABLE},
    }


def register(
    actor: Actor,
    *,
    path: str,
    name: str,
    parent: ModelArtifact | None = None,
    license: str = "",
    notes: str = "",
    tags: Any = (),
    sensitivity: str = Sensitivity.INTERNAL,
    recipe: dict | None = None,
    checksum_now: bool = False,
) -> ModelArtifact:
    """Inspect the directory and record the model; checksums follow in the background."""
    if sensitivity not in Sensitivity.values:
        raise ServiceError(
            f"Unknown sensitivity {sensitivity!r}; use one of {', '.join(Sensitivity.values)}.", "sensitivity"
        )
    try:
        slug_validator(name)
    except ValidationError as exc:
        raise ServiceError(f"Model name {name!r}: {exc.messages[0]}", "name") from None
    tags = _clean_tags(list(tags) if isinstance(tags, tuple) else tags)
    try:
        directory = artifacts.resolve(path)
        found = artifacts.inspect(directory)
    except ArtifactError as exc:
        raise ServiceError(exc.message, exc.field) from None
    except OSError as exc:  # unreadable file, permission denied
        raise ServiceError(f"Could not read the model directory: {exc.strerror} ({exc.filename}).", "path") from None
    if parent is not None and parent.path == str(directory):
        raise ServiceError("A variant lives in a directory of its own, not its parent's.", "path")
    try:
        with transaction.atomic():
            if ModelArtifact.objects.filter(path=str(directory)).exists():
                raise ServiceError(f"{directory} is already registered.", "path")
            artifact = ModelArtifact.objects.create(
                name=name,
                path=str(directory),
                parent=parent,
                recipe=recipe or {},
                license=license,
                notes=notes,
                tags=tags,
                sensitivity=sensitivity,
                warnings=found.warnings,
                created_by=cast("User | None", actor if getattr(actor, "pk", None) else None),
                **found.facts,
            )
            ModelFile.objects.bulk_create(
                [ModelFile(artifact=artifact, name=n, kind=k, size=s) for n, k, s in found.files]
            )
            audit.record(
                actor,
                "model.register",
                artifact,
                after=_public(artifact),
                files=len(found.files),
                warnings=found.warnings,
            )
            if not checksum_now:
                transaction.on_commit(lambda: _schedule_checksums(artifact.pk))
    except IntegrityError:
        raise ServiceError(f"A model named {name!r} already exists.", "name") from None
    if checksum_now:
        compute_checksums(artifact.pk)
        artifact.refresh_from_db()
    return artifact


def _schedule_checksums(artifact_id: int) -> None:
    current_app.send_task(tasks.CHECKSUM_MODEL, args=[artifact_id], queue=tasks.CONSOLE_QUEUE)


def update(actor: Actor, artifact: ModelArtifact, **changes: Any) -> ModelArtifact:
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ServiceError(f"Only {', '.join(EDITABLE)} can be changed, not {', '.join(sorted(unknown))}.")
    if "tags" in changes:
        changes["tags"] = _clean_tags(changes["tags"])
    if "sensitivity" in changes and changes["sensitivity"] not in Sensitivity.values:
        raise ServiceError(f"Unknown sensitivity {changes['sensitivity']!r}.", "sensitivity")
    with transaction.atomic():
        artifact = ModelArtifact.objects.select_for_update(no_key=True).get(pk=artifact.pk)
        before = {k: getattr(artifact, k) for k in changes}
        if before == changes:
            return artifact
        for key, value in changes.items():
            setattr(artifact, key, value)
        artifact.save(update_fields=list(changes))
        audit.record(actor, "model.update", artifact, before=before, after=changes)
    return artifact


def forget(actor: Actor, artifact: ModelArtifact) -> None:
    """Unregister (the files stay on disk). Refused while variants point at it."""
    with transaction.atomic():
        artifact = ModelArtifact.objects.select_for_update(no_key=True).get(pk=artifact.pk)
        if artifact.variants.exists():
            names = ", ".join(artifact.variants.values_list("name", flat=True)[:5])
            raise ServiceError(f"{artifact.name} has variants ({names}); unregister them first.")
        refuse_in_use(
            artifact.name,
            {
                "deployment": artifact.deployments.all(),
                "active grant": artifact.grants.filter(revoked_at=None, expires_at__gt=timezone.now()),
            },
            "delete those deployments and revoke those grants first",
        )
        audit.record(actor, "model.unregister", artifact, before=_public(artifact))
        artifact.delete()


def request_checksums(actor: Actor, artifact: ModelArtifact) -> None:
    with transaction.atomic():
        if ModelArtifact.objects.filter(pk=artifact.pk, checksum_state=ChecksumState.RUNNING).exists():
            raise ServiceError("Checksums are being computed already.")
        ModelArtifact.objects.filter(pk=artifact.pk).update(checksum_state=ChecksumState.PENDING, checksum_progress=0)
        audit.record(actor, "model.checksum", artifact)
        transaction.on_commit(lambda: _schedule_checksums(artifact.pk))


def compute_checksums(artifact_id: int, chunk: int = 1 << 20, claim: str = "") -> None:
    """SHA-256 of every file, with progress (percent of bytes) pushed to topic model.<id>.

    ``claim`` is the task's id: the same task delivered again after its worker died takes over
    its own unfinished run; any other finds it running and leaves it."""
    claimed = (
        ModelArtifact.objects.filter(pk=artifact_id)
        .exclude(Q(checksum_state=ChecksumState.RUNNING) & ~Q(checksum_claim=claim or "-"))
        .update(checksum_state=ChecksumState.RUNNING, checksum_progress=0, checksum_error="", checksum_claim=claim)
    )
    if not claimed:
        return  # gone, or another worker has it
    artifact = ModelArtifact.objects.get(pk=artifact_id)
    files = list(artifact.files.all())
    total, done, last = sum(f.size for f in files) or 1, 0, 0.0
    topic = f"model.{artifact_id}"
    try:
        for f in files:
            digest = hashlib.sha256()
            with (Path(artifact.path) / f.name).open("rb") as handle:
                while block := handle.read(chunk):
                    digest.update(block)
                    done += len(block)
                    if time.monotonic() - last > 0.5:
                        last = time.monotonic()
                        percent = min(99, done * 100 // total)
                        ModelArtifact.objects.filter(pk=artifact_id).update(checksum_progress=percent)
                        publish(topic, {"kind": "checksum", "progress": percent, "state": ChecksumState.RUNNING})
            ModelFile.objects.filter(pk=f.pk).update(sha256=digest.hexdigest())
            publish(topic, {"kind": "file", "name": f.name, "sha256": digest.hexdigest()})
    except OSError as exc:
        message = f"{exc.strerror}: {exc.filename}"
        ModelArtifact.objects.filter(pk=artifact_id).update(checksum_state=ChecksumState.FAILED, checksum_error=message)
        publish(topic, {"kind": "checksum", "state": ChecksumState.FAILED, "error": message})
        return
    ModelArtifact.objects.filter(pk=artifact_id).update(checksum_state=ChecksumState.DONE, checksum_progress=100)
    publish(topic, {"kind": "checksum", "progress": 100, "state": ChecksumState.DONE})
