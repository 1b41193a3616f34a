# make run   - set up, then train the default experiment on the built-in synthetic data
# make test  - set up, then run the test suite (under CI=true the full-size `slow` runs are
#              left out; `make test-slow` runs them)
# make setup - create .venv and install the project (idempotent: redone only when deps change)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-unit test-slow lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	$(PY) -m pip list 2>/dev/null | grep -E '^(torch|flwr) '
	touch $(STAMP)

run: setup
	$(PY) -m experiments.run $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-slow: setup
	RUN_SLOW=1 $(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) experiments/bench.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache .mypy_cache *.egg-info
