# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint bench system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Start the API, 3 worker processes and the scheduler (Ctrl-C stops them gracefully).
run: install
	$(PY) scripts/run_local.py

## The whole suite: lint, types, unit, end-to-end, monitor, compose and fault tests.
test: install system-deps lint
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check app tests bench scripts
	$(PY) -m ruff format --check app tests bench scripts
	$(PY) -m mypy app

## Programs the tests run for real (scripts/system_deps.sh installs the missing ones).
system-deps:
	@scripts/system_deps.sh

bench: install system-deps
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
