"""Jobs: quantizations and benchmarks, run by a node's agent in a runtime environment of their own."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from console.filtering import VisibleQuerySet
from console.states import check_transition
from fleet.jobs.choices import JOB_TRANSITIONS, JobKind, JobState

LOG_KEEP_CHARS = 64 * 1024  # the tail of the log kept on the row; the live view gets every line


class Job(models.Model):
    objects = VisibleQuerySet.as_manager()  # visible_to(user): admins only

    kind = models.CharField(max_length=16, choices=JobKind.choices)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    params = models.JSONField(default=dict)  # typed and validated by fleet.jobs.params
    node = models.ForeignKey("fleet.Node", null=True, on_delete=models.SET_NULL, related_name="jobs")
    model = models.ForeignKey(
        "fleet.ModelArtifact",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        help_text="The model quantized, or the one the benchmark served.",
    )
    deployment = models.ForeignKey(
        "fleet.Deployment", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    variant = models.ForeignKey(
        "fleet.ModelArtifact", null=True, blank=True, on_delete=models.SET_NULL, related_name="made_by"
    )
    progress = models.FloatField(default=0)
    phase = models.CharField(max_length=200, blank=True)
    log = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    artifacts = models.JSONField(default=list, blank=True)  # files the job wrote: name, size, sha256
    error = models.CharField(max_length=500, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state"], name="job_state"),
            models.Index(fields=["kind", "-created_at"], name="job_kind_created"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display().lower()} job {self.pk}"

    @property
    def done(self) -> bool:
        return self.state in JobState.DONE

    @property
    def topic(self) -> str:
        return f"job.{self.pk}"

    @property
    def duration_s(self) -> float | None:
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    def set_state(self, new: str) -> None:
        check_transition(JOB_TRANSITIONS, self.state, new)
        self.state = new

    def append_log(self, lines: list[str]) -> None:
        if lines:
            self.log = (self.log + "\n".join(lines) + "\n")[-LOG_KEEP_CHARS:]
