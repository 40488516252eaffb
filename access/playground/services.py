"""The playground's keys: one per person and grant, held by the console for its holder.

The page calls the gateway like any client (same quotas, ledger row and audit event), so it needs
a real key; the person should not have to paste one. The console derives the key's plaintext
from its secret and the key's own row (``tokens.derive``), so it can hand it to its holder's page
again while only the digest is stored, as for every key. It has no expiry of its own: the grant's
applies, and revoking the grant (or the key, on My access) stops it.

Administrators hold no grants of their own, yet they try every deployment: for them the console
keeps one grant of purpose "playground" naming every registered model (audited when it is made or
changed). The gateway honours it only while its holder is an administrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import audit
from access import bus, tokens
from access.grants.choices import GrantPurpose, KeyPurpose
from access.grants.models import ApiKey, Grant
from access.grants.services import EXPIRING_WITHIN, active_grants, callable_models
from access.people.choices import Role
from access.people.models import User
from fleet.catalog.models import ModelArtifact

KEY_NAME = "Playground"
ADMIN_GRANT_DAYS = 30  # renewed on a visit within EXPIRING_WITHIN of its end


@dataclass(frozen=True)
class Choice:
    """A name the gateway answers to (a model's, or one of its deployments'), the key the page
    calls it with, how many Ready instances serve it, and whether a call wakes it from zero."""

    name: str
    model: str
    key: str
    ready: int
    wakes: bool = False


def _secret(user_id: int, grant_id: int, created_at: datetime) -> tokens.NewToken:
    made = created_at.astimezone(UTC).strftime("%Y%m%d%H%M%S%f")  # to the microsecond, as stored
    return tokens.derive(tokens.KEY_KIND, settings.SECRET_KEY, f"playground:{user_id}:{grant_id}:{made}")


def _make(user: User, grant: Grant) -> str:
    """A new playground key for ``user`` under ``grant`` (audited); its plaintext."""
    created_at = timezone.now()
    secret = _secret(user.pk, grant.pk, created_at)
    key = ApiKey.objects.create(
        grant=grant,
        user=user,
        name=KEY_NAME,
        purpose=KeyPurpose.PLAYGROUND,
        prefix=secret.prefix,
        digest=secret.digest,
        created_at=created_at,
    )
    audit.record(
        user,
        "apikey.create",
        key,
        after={"name": KEY_NAME, "prefix": secret.prefix, "grant": grant.pk, "purpose": KeyPurpose.PLAYGROUND},
    )
    bus.publish_on_commit("keys")
    return secret.plaintext


def keys_for(user: User, grants: list[Grant]) -> dict[int, str]:
    """Plaintext of ``user``'s playground key under each grant, by grant id: one query once they
    exist; the first visit makes them. A key whose digest no longer matches (the console's secret
    was rotated) is revoked and replaced."""
    held = ApiKey.objects.filter(user=user, grant__in=grants, purpose=KeyPurpose.PLAYGROUND, revoked_at__isnull=True)
    out: dict[int, str] = {}
    for key in held:
        secret = _secret(user.pk, key.grant_id, key.created_at)
        if tokens.matches(secret.plaintext, key.digest):
            out[key.grant_id] = secret.plaintext
        else:
            with transaction.atomic():
                key.revoked_at = timezone.now()
                key.save(update_fields=["revoked_at"])
                audit.record(user, "apikey.revoke", key, reason="the console's secret changed; a new key replaces it")
                bus.publish_on_commit("keys")
    for grant in grants:
        if grant.pk not in out:
            with transaction.atomic():
                Grant.objects.select_for_update(no_key=True).get(pk=grant.pk)  # two tabs at once make one key, not two
                again = held.filter(grant=grant).first()
                out[grant.pk] = _secret(user.pk, grant.pk, again.created_at).plaintext if again else _make(user, grant)
    return out


def _state(grant: Grant) -> dict:
    return {"models": sorted(m.name for m in grant.models.all()), "expires_at": grant.expires_at}


def keep_admin_grant(user: User) -> None:
    """Make, or bring up to date, the grant an administrator's playground calls under: every
    registered model, at least EXPIRING_WITHIN from its end. Unchanged, it costs three queries."""
    models = list(ModelArtifact.objects.order_by("pk"))
    current = Grant.objects.filter(
        user=user, purpose=GrantPurpose.PLAYGROUND, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).prefetch_related("models")

    def up_to_date(grant: Grant | None) -> bool:
        return (
            grant is not None
            and grant.expires_at - timezone.now() > EXPIRING_WITHIN
            and {m.pk for m in grant.models.all()} == {m.pk for m in models}
        )

    if up_to_date(current.first()):
        return
    with transaction.atomic():
        User.objects.select_for_update(no_key=True).get(pk=user.pk)  # two tabs at once make one grant, not two
        grant = current.first()
        if up_to_date(grant):  # the other tab did it
            return
        expires_at = timezone.now() + timedelta(days=ADMIN_GRANT_DAYS)
        if grant is None:
            grant = Grant.objects.create(
                user=user,
                purpose=GrantPurpose.PLAYGROUND,
                expires_at=expires_at,
                note="An administrator trying deployments in the playground",
                created_by=user,
            )
            grant.models.set(models)
            audit.record(user, "grant.create", grant, after={"holder": user.username, **_state(grant)})
        else:
            before = _state(grant)
            grant.models.set(models)
            if grant.expires_at - timezone.now() <= EXPIRING_WITHIN:
                grant.expires_at = expires_at
                grant.save(update_fields=["expires_at"])
            # set() dropped the prefetched models: _state reads the new ones
            audit.record(user, "grant.update", grant, before=before, after=_state(grant))
        bus.publish_on_commit("keys")


def choices(user: User) -> list[Choice]:
    """Every name the person may call (each granted model's, then its deployments', as /v1/models
    lists them), with the key of the grant that lasts longest; an administrator, every model."""
    if user.role == Role.ADMIN:
        keep_admin_grant(user)
    grants = sorted(active_grants(user), key=lambda g: g.expires_at, reverse=True)
    covering = {}
    for grant in reversed(grants):  # the longest-lasting grant last, so it wins
        covering.update({m.pk: grant for m in grant.models.all()})
    models = list(callable_models(user))
    keys = keys_for(user, list({covering[m.pk].pk: covering[m.pk] for m in models}.values()))
    out = []
    for model in models:
        key, deployments = keys[covering[model.pk].pk], list(model.deployments.all())
        ready = [d.ready for d in deployments]  # type: ignore[attr-defined]
        wakes = any(d.wakes_on_call for d in deployments)
        out.append(Choice(name=model.name, model=model.name, key=key, ready=sum(ready), wakes=wakes))
        out += [
            Choice(name=d.name, model=model.name, key=key, ready=n, wakes=d.wakes_on_call)
            for d, n in zip(deployments, ready, strict=True)
        ]
    unique = {c.name: c for c in reversed(out)}  # a deployment named as a model: the model's entry
    return [c for c in out if unique[c.name] is c]
