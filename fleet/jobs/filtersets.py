"""The job list's filters, for the Jobs page and /api/jobs/ alike."""

from __future__ import annotations

from django.db.models import QuerySet

from console.filtering import ListFilterSet, choice, search
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job


class JobFilterSet(ListFilterSet):
    q = search("model__name", "deployment__name", "variant__name", "node__name")
    kind = choice(JobKind.choices, "any kind")
    state = choice(JobState.choices, "any state")

    class Meta:
        model = Job
        fields = ["q", "kind", "state"]

    @classmethod
    def prepare(cls, qs: QuerySet) -> QuerySet:
        return qs.select_related("node", "model", "deployment", "variant", "created_by").order_by("-created_at", "-id")
