"""One read path per list: a FilterSet that the page and the API both build, over the rows its
object kind lets the user see (``Model.objects.visible_to(user)``), so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import django_filters
from django import forms
from django.core.paginator import Page, Paginator
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, QueryDict
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field

if TYPE_CHECKING:
    from rest_framework.filters import BaseFilterBackend
    from rest_framework.generics import BaseFilterProtocol

    from console.actions import Actor


class VisibleQuerySet(QuerySet):
    """A queryset with the one visibility rule of its object kind. The default: admins only."""

    def visible_to(self, user: Actor) -> VisibleQuerySet:
        return self if getattr(user, "is_fleet_admin", False) else self.none()


class ListFilterSet(django_filters.FilterSet):
    """Subclasses name the model in Meta, their filters, and ``prepare`` (joins, annotations,
    order) for the rows a list shows."""

    page_defaults: ClassVar[dict[str, str]] = {}  # what the page's first view selects (a tab)

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return qs

    @classmethod
    def visible(cls, user: Actor) -> QuerySet:
        model: type[Model] = cls._meta.model
        return cls.prepare(model.objects.visible_to(user))  # type: ignore[attr-defined]

    @classmethod
    def for_page(cls, request: HttpRequest) -> ListFilterSet:
        params: QueryDict = request.GET.copy()
        for key, value in cls.page_defaults.items():
            params.setdefault(key, value)
        return cls(params, queryset=cls.visible(request.user), request=request)


def search(*fields: str) -> django_filters.CharFilter:
    """``?q=``: a case-insensitive match on any of ``fields``."""

    def method(qs: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip()
        if not value:
            return qs
        match = Q()
        for field in fields:
            match |= Q(**{f"{field}__icontains": value})
        return qs.filter(match).distinct() if any("__" in f for f in fields) else qs.filter(match)

    return django_filters.CharFilter(method=method, label="Search")


def choice(choices: Sequence[tuple[str, str]], blank: str, **kwargs: Any) -> django_filters.ChoiceFilter:
    """A choice filter whose blank (the page's "any" option, labelled ``blank``) is one of its
    documented values, so ``?kind=`` is as valid in the API's document as in the page's form."""
    return django_filters.ChoiceFilter(choices=[("", blank), *choices], empty_label=None, **kwargs)


@extend_schema_field({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 0}]})
class IdFilter(django_filters.NumberFilter):
    """An object's id; blank (a form's empty field) means any, as the document says. A whole
    number only: NumberFilter's decimal field would take ``0.5`` and match nothing."""

    field_class = forms.IntegerField


def list_page(
    request: HttpRequest, filterset_class: type[ListFilterSet], page_size: int
) -> tuple[ListFilterSet, Page, int]:
    """The page's side: the filtered rows, one page of them, and 400 when a filter is invalid."""
    filterset = filterset_class.for_page(request)
    status = 200 if filterset.is_valid() else 400
    page = Paginator(filterset.qs, page_size).get_page(request.GET.get("page"))
    return filterset, page, status


class FilteredListMixin:
    """The API's side: a viewset's rows are its FilterSet's visible rows, filtered by the same
    query parameters as the page (an invalid one is a 400 naming it)."""

    filterset_class: type[ListFilterSet]
    filter_backends: Sequence[type[BaseFilterBackend | BaseFilterProtocol[Any]]] = [DjangoFilterBackend]
    request: Any

    def get_queryset(self) -> QuerySet:
        return self.filterset_class.visible(self.request.user)


class CountedPaginator(Paginator):
    """A paginator told its count, for a list too long to COUNT(*) per page view (the usage ledger
    counts from its rollups)."""

    def __init__(self, object_list: Any, per_page: int, *, count: int) -> None:
        super().__init__(object_list, per_page)
        self._known = count

    @property
    def count(self) -> int:
        return self._known
