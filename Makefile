VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-fast bench lint

install:
	python3 -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'

# Two pytest workers of one torch thread each (a test file per worker at a time): most of the
# suite is Python between small torch calls, and two processes of two threads each on two cores
# would spin against each other.
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile

test:
	$(PYTEST)

test-fast:
	$(PYTEST) -m "not slow"

bench:
	$(PY) scripts/bench_engine.py

lint:
	$(VENV)/bin/ruff check nascli tests scripts
	$(VENV)/bin/ruff format --check nascli tests scripts
