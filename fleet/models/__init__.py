"""Fleet models: nodes and their GPUs (nodes.py), registered models and their files (registry.py),
deployments and their instances (deployments.py), jobs (jobs.py)."""
from fleet.models.nodes import GPU, HOST, NODE_NAME_RE, JoinToken, Node, TelemetryRollup, node_name_validator
from fleet.models.registry import ChecksumState, ModelArtifact, ModelFile, Sensitivity
from fleet.models.deployments import Deployment, Instance
from fleet.models.jobs import Job

__all__ = ["GPU", "HOST", "NODE_NAME_RE", "JoinToken", "Node", "TelemetryRollup", "node_name_validator",
           "ChecksumState", "ModelArtifact", "ModelFile", "Sensitivity",
           "Deployment", "Instance", "Job"]
