"""Every model of the "fleet" app, for Django's registry; code imports them from their domain."""

from fleet.catalog.models import ModelArtifact, ModelFile
from fleet.deployments.models import Deployment, Instance, Revision
from fleet.jobs.models import Job
from fleet.nodes.models import GPU, JoinToken, Node, TelemetryRollup

__all__ = [
    "GPU",
    "Deployment",
    "Instance",
    "Job",
    "JoinToken",
    "ModelArtifact",
    "ModelFile",
    "Node",
    "Revision",
    "TelemetryRollup",
]
