"""Quantization and benchmark jobs run by a node's agent."""
