from collections.abc import Callable
from typing import Any, TypeVar

from django.db import models
from django.db.models import Q, QuerySet

Rows = TypeVar("Rows", bound=QuerySet)


class Role(models.TextChoices):
    ADMIN = "admin", "Admin (IT)"
    DEPT_USER = "dept_user", "Department user"
    AUDITOR = "auditor", "Auditor"
    NONE = "none", "No role"


# When a person's directory groups map to several roles, the first of these wins.
ROLE_PRECEDENCE = (Role.ADMIN, Role.AUDITOR, Role.DEPT_USER)


class Source(models.TextChoices):
    """Where a person's identity lives: the console's own password, or the organisation's directory."""

    LOCAL = "local", "Local account"
    LDAP = "ldap", "Directory (LDAP)"
    OIDC = "oidc", "Single sign-on (OIDC)"


LDAP_PROVIDER = "ldap"  # a mapping's provider: the LDAP directory, or an OIDC provider's configured name


READERS = (Role.ADMIN, Role.AUDITOR)  # who reads everyone's requests, grants, keys and usage


def role_of(user: Any) -> str:
    """The role a request's user acts with: none unless signed in and active."""
    active = getattr(user, "is_authenticated", False) and getattr(user, "is_active", False)
    return getattr(user, "role", Role.NONE) if active else Role.NONE


def readers_or_own(rows: Rows, user: Any, own: Callable[[Any], Q]) -> Rows:
    """The visibility rule of access requests, grants, keys and usage: every row for admins and
    auditors, the rows ``own(user)`` selects for a department user, none for anyone else."""
    role = role_of(user)
    if role in READERS:
        return rows
    return rows.filter(own(user)) if role == Role.DEPT_USER else rows.none()
