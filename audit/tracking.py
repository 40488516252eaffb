"""Model change tracking: one audit event per create, update (changed fields only) or delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_save, pre_save

import audit

CHANGED = "(changed)"  # what a secret field's before/after shows: that it changed, never its value


def track(
    model: type[models.Model],
    *,
    prefix: str,
    fields: list[str],
    actor: Callable[[], Any],
    secret_fields: list[str] | None = None,
) -> None:
    secrets_ = set(secret_fields or [])

    def snapshot(instance: models.Model) -> dict[str, Any]:
        return {f: getattr(instance, f) for f in fields}

    def shown(values: dict[str, Any]) -> dict[str, Any]:
        return {k: (CHANGED if k in secrets_ else v) for k, v in values.items()}

    def before_save(sender: Any, instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
        if raw or instance.pk is None:
            instance._audit_before = None  # type: ignore[attr-defined]  # carried to after_save on the instance
            return
        old = sender._default_manager.filter(pk=instance.pk).values(*fields).first()
        instance._audit_before = old  # type: ignore[attr-defined]  # carried to after_save on the instance

    def after_save(sender: Any, instance: models.Model, created: bool, raw: bool = False, **kwargs: Any) -> None:
        if raw:
            return
        old = getattr(instance, "_audit_before", None)
        if created or old is None:
            after = {k: v for k, v in snapshot(instance).items() if k not in secrets_}
            audit.record(actor(), f"{prefix}.create", instance, after=after)
            return
        new = snapshot(instance)
        changed = [f for f in fields if old.get(f) != new[f]]
        if changed:
            audit.record(
                actor(),
                f"{prefix}.update",
                instance,
                before=shown({f: old[f] for f in changed}),
                after=shown({f: new[f] for f in changed}),
            )

    def after_delete(sender: Any, instance: models.Model, **kwargs: Any) -> None:
        before = {k: v for k, v in snapshot(instance).items() if k not in secrets_}
        audit.record(actor(), f"{prefix}.delete", instance, before=before)

    uid = f"audit-track-{model._meta.label_lower}"
    pre_save.connect(before_save, sender=model, weak=False, dispatch_uid=uid)
    post_save.connect(after_save, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(after_delete, sender=model, weak=False, dispatch_uid=uid)
