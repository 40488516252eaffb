"""Revisions of a deployment and where its rolling update stands. The reconciler replaces the
instances of an older revision one replica at a time (fleet.deployments.reconciler); these are
the state changes it and the admin's actions share: a new revision, one made current again (a
rollback: by hand, or because the new revision's instance failed), the rollout's end."""

from __future__ import annotations

from typing import Any

from django.db.models import Max

import audit
from console.actions import Actor, ServiceError
from console.live import publish_on_commit
from fleet.deployments.choices import InstanceState, RevisionOutcome, Rollout
from fleet.deployments.models import Deployment, Instance, Revision

ACTOR = "rollout"


def _user(actor: Actor) -> Any:
    return actor if getattr(actor, "pk", None) else None


def first(d: Deployment) -> Revision:
    """The deployment's current revision as a row: written on the first update (a deployment
    that was never updated has only its number)."""
    found = Revision.objects.filter(deployment=d, number=d.revision).first()
    if found is not None:
        return found
    return Revision.objects.create(
        deployment=d,
        number=d.revision,
        model=d.model,
        model_name=d.model.name,
        options=d.options,
        outcome=RevisionOutcome.DONE,
        created_by=d.created_by,
        created_at=d.created_at,
    )


def differences(before: Revision, model: Any, options: dict) -> dict[str, list]:
    """{field: [before, after]} for the model and each vLLM option that differs."""
    changes: dict[str, list] = {}
    if before.model_id != model.pk:
        changes["model"] = [before.model_name, model.name]
    for key in sorted(set(before.options) | set(options)):
        if before.options.get(key) != options.get(key):
            changes[f"options.{key}"] = [before.options.get(key), options.get(key)]
    return changes


def _rolls(d: Deployment, number: int) -> bool:
    """Whether instances of another revision than ``number`` still run (or wait for the admin)."""
    current = Instance.objects.filter(deployment=d, state__in=InstanceState.LIVE | {InstanceState.FAILED})
    return current.exclude(revision=number).exists()


def new(actor: Actor, d: Deployment, model: Any, options: dict) -> Revision | None:
    """Make (model, options) the deployment's next revision (``d`` locked by the caller); None if
    nothing differs. An update during a rollout supersedes the revision that was rolling out."""
    unsaved = Revision(deployment=d, number=d.revision, model=d.model, model_name=d.model.name, options=d.options)
    changes = differences(unsaved, model, options)
    if not changes:
        return None
    current = first(d)
    if current.outcome == RevisionOutcome.ROLLING:
        current.outcome = RevisionOutcome.SUPERSEDED
        current.save(update_fields=["outcome"])
    number = (Revision.objects.filter(deployment=d).aggregate(top=Max("number"))["top"] or 0) + 1
    rolls = _rolls(d, number)
    revision = Revision.objects.create(
        deployment=d,
        number=number,
        model=model,
        model_name=model.name,
        options=options,
        changes=changes,
        outcome=RevisionOutcome.ROLLING if rolls else RevisionOutcome.DONE,
        created_by=_user(actor),
    )
    before = {"revision": d.revision, "model": d.model.name, "options": d.options}
    _make_current(d, model, options, number, rolls)
    audit.record(
        actor,
        "deployment.update",
        d,
        before=before,
        after={"revision": number, "model": model.name, "options": options},
        changes=changes,
    )
    _changed(d)
    return revision


def _make_current(d: Deployment, model: Any, options: dict, number: int, rolls: bool) -> None:
    """The deployment serves revision ``number`` from now on; rolling while older instances run."""
    d.model, d.options, d.revision = model, options, number
    d.rollout = Rollout.ROLLING if rolls else Rollout.NONE
    d.save(update_fields=["model", "options", "revision", "rollout", "updated_at"])


def roll_back(actor: Actor, d: Deployment, to: Revision, note: str) -> Revision:
    """Make an earlier revision current again (``d`` locked by the caller): the reconciler then
    replaces the instances of the one given up, one replica at a time."""
    if to.deployment_id != d.pk:
        raise ServiceError("That revision is another deployment's.", "revision")
    if to.number == d.revision:
        raise ServiceError(f"Revision {to.number} is the current one already.", "revision")
    if to.model is None:
        raise ServiceError(
            f"Revision {to.number}'s model ({to.model_name}) was deleted; register it again or update instead.",
            "revision",
        )
    given_up = first(d)
    if given_up.outcome == RevisionOutcome.ROLLING:
        given_up.outcome, given_up.note = RevisionOutcome.ROLLED_BACK, note[:300]
        given_up.save(update_fields=["outcome", "note"])
    rolls = _rolls(d, to.number)
    to.outcome = RevisionOutcome.ROLLING if rolls else RevisionOutcome.DONE
    to.save(update_fields=["outcome"])
    before = {"revision": d.revision, "model": d.model.name}
    _make_current(d, to.model, to.options, to.number, rolls)
    audit.record(
        actor,
        "deployment.rollback",
        d,
        before=before,
        after={"revision": to.number, "model": to.model_name},
        cause=note,
    )
    _changed(d)
    return to


def previous(d: Deployment) -> Revision | None:
    """The revision a rollout of the current one started from: the one most of the other
    instances run (else the newest rolled-out one before it)."""
    others = (
        Instance.objects.filter(deployment=d, state__in=InstanceState.LIVE)
        .exclude(revision=d.revision)
        .values_list("revision", flat=True)
    )
    numbers = list(others)
    revisions = Revision.objects.filter(deployment=d).exclude(number=d.revision).select_related("model")
    if numbers:
        found = revisions.filter(number=max(set(numbers), key=numbers.count)).first()
        if found is not None:
            return found
    return revisions.filter(outcome=RevisionOutcome.DONE).order_by("-number").first()


def set_paused(actor: Actor, d: Deployment, paused: bool) -> None:
    """Hold the rollout where it is (both revisions keep serving), or go on (``d`` locked)."""
    if d.rollout == Rollout.NONE:
        raise ServiceError("No rollout is under way: there is nothing to pause or resume.", "action")
    wanted = Rollout.PAUSED if paused else Rollout.ROLLING
    if d.rollout == wanted:
        return
    d.rollout = wanted
    d.save(update_fields=["rollout", "updated_at"])
    audit.record(actor, "deployment.rollout_pause" if paused else "deployment.rollout_resume", d)
    _changed(d)


def finish(d: Deployment) -> None:
    """Every replica runs the current revision and is Ready: the rollout is over."""
    Deployment.objects.filter(pk=d.pk).update(rollout=Rollout.NONE)
    d.rollout = Rollout.NONE
    Revision.objects.filter(deployment=d, number=d.revision, outcome=RevisionOutcome.ROLLING).update(
        outcome=RevisionOutcome.DONE
    )
    audit.record(ACTOR, "deployment.rollout_done", d, after={"revision": d.revision, "replicas": d.replicas})
    _changed(d)


def _changed(d: Deployment) -> None:
    publish_on_commit(f"deployment.{d.pk}", {"kind": "changed"})
