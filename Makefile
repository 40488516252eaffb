# The two commands: `make run` (the whole product) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test manage venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m console.launch run

test: $(STAMP)
	$(PY) -m console.launch test $(ARGS)

# e.g. make manage ARGS="createsuperuser"
manage: $(STAMP)
	$(PY) -m console.launch manage $(ARGS)
