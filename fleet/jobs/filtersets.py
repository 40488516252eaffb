"""The job list's filters, for the Jobs page and /api/jobs/ alike."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from console.filtering import ListFilterSet, search
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job


class JobFilterSet(ListFilterSet):
    q = search("model__name", "deployment__name", "variant__name", "node__name")
    kind = django_filters.ChoiceFilter(choices=JobKind.choices, empty_label="any kind")
    state = django_filters.ChoiceFilter(choices=JobState.choices, empty_label="any state")

    class Meta:
        model = Job
        fields = ["q", "kind", "state"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return qs.select_related("node", "model", "deployment", "variant", "created_by").order_by("-created_at", "-id")
