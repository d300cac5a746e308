VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-fast bench lint

install:
	python3 -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

bench:
	$(PY) scripts/bench_engine.py

lint:
	$(VENV)/bin/ruff check nascli tests scripts
	$(VENV)/bin/ruff format --check nascli tests scripts
