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
