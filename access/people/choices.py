from typing import Any

from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Admin (IT)"
    DEPT_USER = "dept_user", "Department user"
    AUDITOR = "auditor", "Auditor"
    NONE = "none", "No role"


READERS = (Role.ADMIN, Role.AUDITOR)  # who reads everyone's requests, grants, keys and usage


def role_of(user: Any) -> str:
    """The role a request's user acts with: none unless signed in and active."""
    active = getattr(user, "is_authenticated", False) and getattr(user, "is_active", False)
    return getattr(user, "role", Role.NONE) if active else Role.NONE
