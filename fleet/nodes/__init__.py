"""Nodes and their GPUs: join tokens, registration, heartbeats, telemetry rollups, cordon, removal."""
