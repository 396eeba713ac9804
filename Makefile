# The two commands of the README: `make run` and `make test`. Both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# pyproject.toml's requires-python, as a check that exits 0 only on a Python that satisfies it.
PY_OK := import sys; sys.exit(sys.version_info < (3, 11))
# The first of these that is 3.11 or newer (python3 may be an older one beside a newer python3.X).
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c '$(PY_OK)' 2>/dev/null && { echo $$p; break; }; done),python3)
endif

.PHONY: install run test lint bench system-deps clean

# A virtualenv made by a Python older than 3.11 (or whose Python is gone) is removed and made again:
# keeping it would fail every later install with "requires a different Python".
$(STAMP): pyproject.toml
	@if [ -e $(VENV) ] && ! $(PY) -c '$(PY_OK)' 2>/dev/null; then \
	  echo "$(VENV) was made by $$($(PY) -V 2>&1 || echo a Python that no longer runs), but taskqueue needs 3.11+: rebuilding it"; \
	  rm -rf $(VENV); fi
	@test -x $(PY) || $(PYTHON) -c '$(PY_OK)' 2>/dev/null || { \
	  echo "taskqueue needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1). Install one and run: make PYTHON=python3.11 ..." >&2; \
	  exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Start the API, 3 worker processes and the scheduler (Ctrl-C stops them gracefully and exits 0).
## Options of scripts/run_local.py go in ARGS, e.g. make run ARGS=--embedded-redis
run: install
	@$(PY) scripts/run_local.py $(ARGS)

## The whole suite: lint, types, unit, end-to-end, monitor, compose and fault tests.
test: install system-deps lint
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check app taskqueue tests bench scripts
	$(PY) -m ruff format --check app taskqueue tests bench scripts
	$(PY) -m mypy app taskqueue

## Programs the tests run for real (scripts/system_deps.sh installs the missing ones).
system-deps:
	@scripts/system_deps.sh

bench: install system-deps
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
