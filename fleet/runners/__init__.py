"""Job programs. Each runs as a script (by path, not as a package) inside a runtime environment of
its own: quantize.py in llm-compressor's, benchmark.py in vLLM's. They import nothing from the
console. They read a JSON spec (argv[1]), print their log to stdout, and report structured events
as lines ``@fleet {json}`` that the agent turns into progress and the result (fleet/agent/jobs.py)."""
