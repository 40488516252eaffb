"""Sensitivity of a model and the state of its checksums."""

from __future__ import annotations

from django.db import models


class Sensitivity(models.TextChoices):
    PUBLIC = "public", "Public"
    INTERNAL = "internal", "Internal"
    CONFIDENTIAL = "confidential", "Confidential"
    RESTRICTED = "restricted", "Restricted (e.g. patient or client data)"


class ChecksumState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Computing"
    DONE = "done", "Verified"
    FAILED = "failed", "Failed"
