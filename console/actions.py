"""What every app's services share: the refusal they raise, and how a UI button shows the outcome."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from django.contrib import messages
from django.http import HttpRequest

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser


class ServiceError(Exception):
    """A refusal shown to the person (or agent) as it is: a 400 in the API, a message in the UI, an
    error to the agent. ``field`` names the input at fault, when one is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def refuse_in_use(what: str, uses: dict[str, Any], remedy: str) -> None:
    """A delete others depend on is refused naming them (a 409 in the API, a message in the UI).
    ``uses``: a singular label for each kind of dependent, and a queryset of them."""
    counts = {label: qs.count() for label, qs in uses.items()}
    named = [f"{n} {label}{'' if n == 1 else 's'}" for label, n in counts.items() if n]
    if named:
        raise ServiceError(f"{what} is in use by {', '.join(named)}; {remedy}.")


def flash(request: HttpRequest, action: Callable[[], Any], success: str) -> bool:
    """Run a service call for a POST-and-redirect view: its refusal becomes an error message on the
    next page, else ``success`` does. True when it succeeded."""
    try:
        action()
    except ServiceError as exc:
        messages.error(request, exc.message)
        return False
    messages.success(request, success)
    return True


def form_error(form: Any, exc: Any) -> None:
    """Show a refusal (a ServiceError, or anything with ``message`` and ``field`` such as the
    estimator's) on the form: beside its field when the form has that field, else above it."""
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


# Who did something: a person (a user, or anonymous for a failed sign-in), a named system actor
# such as "agent:<node>", or None for the console itself (beat, the worker).
Actor: TypeAlias = "AbstractBaseUser | AnonymousUser | str | None"
