"""Nodes, GPUs, models, deployments and jobs arrive with the issues that build them."""
