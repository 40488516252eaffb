"""States of an access request and the transitions they allow (a grant or key is revoked once:
console.states.Revocable)."""

from __future__ import annotations

from django.db import models


class AccessRequestState(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    WITHDRAWN = "withdrawn", "Withdrawn"


ACCESS_REQUEST_TRANSITIONS: dict[str, set[str]] = {
    AccessRequestState.PENDING: {AccessRequestState.APPROVED, AccessRequestState.DENIED, AccessRequestState.WITHDRAWN},
    AccessRequestState.APPROVED: set(),
    AccessRequestState.DENIED: set(),
    AccessRequestState.WITHDRAWN: set(),
}


class KeyPurpose(models.TextChoices):
    """An application's key, made and shown once by its holder, or the one the playground holds
    for its holder under a grant (the console re-creates its plaintext; see access.playground)."""

    APP = "app", "Application"
    PLAYGROUND = "playground", "Playground"


class GrantPurpose(models.TextChoices):
    """Access granted to a department user (directly or by approving a request), or the grant the
    console makes for an administrator's playground: every model, valid only while its holder is
    an administrator (see access.playground)."""

    ACCESS = "access", "Access"
    PLAYGROUND = "playground", "Administrator's playground"
