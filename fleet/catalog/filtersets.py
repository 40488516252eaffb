"""The model list's filters, for the Models page and /api/models/ alike."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from console.filtering import ListFilterSet, choice, search
from fleet.catalog.choices import Sensitivity
from fleet.catalog.models import ModelArtifact


class ModelFilterSet(ListFilterSet):
    q = search("name", "architecture", "tags")
    sensitivity = choice(Sensitivity.choices, "any sensitivity")

    class Meta:
        model = ModelArtifact
        fields = ["q", "sensitivity"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return qs.select_related("parent").annotate(variant_count=Count("variants")).order_by("name")
