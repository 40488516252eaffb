"""Someone who stops being an administrator loses the playground grant the console kept for them,
whichever way the role changed (the People page, the API, a directory sync or sign-in, the shell)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save

from access.grants import services
from access.people.choices import Role
from access.people.models import User


def _role_saved(sender: Any, instance: User, update_fields: Any = None, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance.role == Role.ADMIN or (update_fields is not None and "role" not in update_fields):
        return
    services.end_admin_grants(instance)


post_save.connect(_role_saved, sender=User, dispatch_uid="grants-end-admin-grants")
