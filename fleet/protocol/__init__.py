"""What the console and the agent share, with no Django: task names both ways, message shapes,
telemetry checks, runtime environments, vLLM argv, diagnosis of a failed start."""
