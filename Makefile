# make run   - set up, then train the default experiment on the built-in synthetic data
# make test  - set up, then run the test suite (under CI=true the full-size `slow` runs are
#              left out; `make test-slow` runs them)
# make setup - create .venv and install the project (idempotent: redone only when deps change)
# Tiers, each chosen by name (docs/development.md): `make test-unit` (no Ray, no engine run),
# `make test-engine` (small runs on Ray's simulation and loopback deployments), `make test-slow`
# (full-size runs; the deployment tests with their slow ones took 31 minutes here). CI runs no
# slow test; a change runs `make test-slow-changed` before it is committed (the slow modules that
# reach what it changed; nothing when it touches none), and an issue runs `make test-slow` before
# it closes. In the unit tier, tests/test_tiers.py collects the slow tier and checks that every
# name it reads from the project exists, so a rename cannot rot it unseen.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-unit test-engine test-slow test-slow-changed lint bench clean

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

# one BLAS, OpenMP and torch thread per test process (subprocesses and Ray workers included):
# the two pytest workers share two cores, where a second thread per process only spins; measured
# 20-30x slower small fits with two (models/threads.py, docs/development.md)
TEST_TARGETS = test test-unit test-engine test-slow test-slow-changed
$(TEST_TARGETS): export OMP_NUM_THREADS = 1
$(TEST_TARGETS): export OPENBLAS_NUM_THREADS = 1
$(TEST_TARGETS): export MKL_NUM_THREADS = 1

# two pytest workers, each taking whole test files (a module's fixtures run once): the suite
# waits on subprocesses and loopback deployments much of the time (CPU 1.0x wall serially)
XDIST ?= -n 2 --dist loadfile --no-loadscope-reorder
test: setup
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-engine: setup
	$(PY) -m pytest -m engine $(XDIST) $(PYTEST_ARGS)

test-slow: setup
	RUN_SLOW=1 $(PY) -m pytest -m slow $(PYTEST_ARGS)

BASE ?= HEAD
test-slow-changed: setup  # the slow tests of the modules a change since $(BASE) touches
	@modules="$$($(PY) -m tests.slow_scope $(BASE))"; \
	if [ -z "$$modules" ]; then echo "the change since $(BASE) touches no slow test"; \
	else echo "slow tests touched: $$modules"; \
	RUN_SLOW=1 $(PY) -m pytest -m slow $$modules $(PYTEST_ARGS); fi

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) experiments/bench.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache .mypy_cache *.egg-info
