"""Role checks for views (UI and API). Every view names the roles that may use it."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, cast

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import BasePermission, IsAuthenticated

from access.people.choices import Role

if TYPE_CHECKING:
    from access.people.models import User

ANY_ROLE = (Role.ADMIN, Role.DEPT_USER, Role.AUDITOR)


def role_required(*roles: str) -> Callable:
    """UI views: anonymous → login page; signed in with another role → 403 page."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not request.user.has_role(*roles):
                raise PermissionDenied("Your role does not give access to this page.")
            return view(request, *args, **kwargs)

        wrapped.allowed_roles = roles  # type: ignore[attr-defined]
        return wrapped

    return decorator


def signed_in_user(request: HttpRequest) -> User:
    """The person of a view that only lets signed-in people in (``role_required``, ``login_required``)."""
    return cast("User", request.user)


class HasRole(BasePermission):
    """API views: ``permission_classes = [HasRole.of(Role.ADMIN)]``."""

    roles: tuple[str, ...] = ()
    message = "Your role does not give access to this endpoint."

    @classmethod
    def of(cls, *roles: str) -> type[HasRole]:
        return type(f"HasRole_{'_'.join(roles)}", (cls,), {"roles": roles})

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_role(*self.roles))


class AnyRole(HasRole):
    """Signed in and holding a role (not an outsider)."""

    roles = ANY_ROLE


# an API view's permission_classes for admins
ADMIN_ONLY: list[type[BasePermission]] = [IsAuthenticated, HasRole.of(Role.ADMIN)]
