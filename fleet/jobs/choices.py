"""Kinds and states of a job, and the transitions a job's state allows."""

from __future__ import annotations

from typing import ClassVar

from django.db import models


class JobKind(models.TextChoices):
    QUANTIZE = "quantize", "Quantization"
    BENCHMARK = "benchmark", "Benchmark"


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"

    DONE: ClassVar[set[JobState]]  # the final states; set below (an annotation, not a member)


JobState.DONE = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


JOB_TRANSITIONS: dict[str, set[str]] = {
    JobState.QUEUED: {JobState.RUNNING, JobState.FAILED, JobState.CANCELLED, JobState.SUCCEEDED},
    JobState.RUNNING: {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED},
    JobState.SUCCEEDED: set(),
    JobState.FAILED: set(),
    JobState.CANCELLED: set(),
}
