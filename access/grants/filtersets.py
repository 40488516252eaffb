"""The filters of the access-request, grant and key lists, for the pages and the API alike."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet
from django.utils import timezone

from access.grants import services
from access.grants.models import AccessRequest, ApiKey, Grant
from console.filtering import ListFilterSet, choice, search


class AccessRequestFilterSet(ListFilterSet):
    q = search("requester__username", "models__name", "justification")
    state = choice(AccessRequest.State.choices, "any state")

    class Meta:
        model = AccessRequest
        fields = ["q", "state"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return (
            qs.select_related("requester", "department", "decided_by")
            .prefetch_related("models")
            .order_by("-created_at", "-id")
        )


def _grant_show(qs: QuerySet, name: str, value: str) -> QuerySet:
    now = timezone.now()
    if value == "active":
        return qs.filter(revoked_at__isnull=True, expires_at__gt=now)
    if value == "expiring":
        return qs.filter(pk__in=services.expiring().values("pk"))
    if value == "ended":
        return qs.filter(Q(revoked_at__isnull=False) | Q(expires_at__lte=now))
    return qs


def _flag(value: str, show: str) -> str:
    return show if value in ("1", "true") else ""


class GrantFilterSet(ListFilterSet):
    page_defaults = {"show": "active"}

    q = search("user__username", "department__name", "models__name")
    show = choice(
        [("active", "Active"), ("expiring", "Expiring within 14 days"), ("ended", "Ended"), ("all", "All")],
        "all",
        method=_grant_show,
    )
    # Earlier spellings of ?show=, kept for API clients: ?active=1, ?expiring=1.
    active = django_filters.CharFilter(
        method=lambda qs, name, on: _grant_show(qs, name, _flag(on, "active")), label="Active only (1)"
    )
    expiring = django_filters.CharFilter(
        method=lambda qs, name, on: _grant_show(qs, name, _flag(on, "expiring")), label="Expiring only (1)"
    )

    class Meta:
        model = Grant
        fields = ["q", "show", "active", "expiring"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return qs.select_related("user", "department").prefetch_related("models").order_by("expires_at", "id")


def _key_show(qs: QuerySet, name: str, value: str) -> QuerySet:
    if value == "active":
        return qs.filter(revoked_at__isnull=True)
    if value == "revoked":
        return qs.filter(revoked_at__isnull=False)
    return qs


class ApiKeyFilterSet(ListFilterSet):
    page_defaults = {"show": "active"}

    q = django_filters.CharFilter(method="search_keys", label="Search")
    show = choice([("active", "Not revoked"), ("revoked", "Revoked"), ("all", "All")], "all", method=_key_show)
    user = django_filters.CharFilter(field_name="user__username", label="User")

    class Meta:
        model = ApiKey
        fields = ["q", "show", "user"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return qs.select_related("user", "grant").prefetch_related("models").order_by("-created_at", "-id")

    def search_keys(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip()
        if not value:
            return qs
        return qs.filter(Q(user__username__icontains=value) | Q(name__icontains=value) | Q(prefix__startswith=value))
