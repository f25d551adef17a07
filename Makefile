# Bastion developer commands. `make run` = try it, `make test` = what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# First python >= 3.11 on PATH (override: make PYTHON=/path/to/python3.12 ...).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	then command -v $$p; break; fi; done)
PYTEST_ARGS ?=
# Test processes: one more than the cores, since most tests wait on servers they started
# (docs/decisions.md, "Test suite in parallel"). PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))

.PHONY: help run test test-deps lint bench docs clean distclean

help:
	@echo "make run        create .venv, install Bastion, start the demo (bastion demo)"
	@echo "make test       install test deps, lint, then the whole pytest suite (what CI runs)"
	@echo "make lint       ruff check, ruff format --check, mypy --strict bastion, lint-imports"
	@echo "make bench      run the benchmarks (python -m bench)"
	@echo "make docs       regenerate docs/config.schema.json and docs/configuration.md"
	@echo "make clean      remove caches and build output; distclean also .venv and node_modules"
	@echo "variables: PYTHON=/path/to/python3.11+  PYTEST_ARGS='-k foo -x'  PYTEST_WORKERS=0 (one process)"

$(PY):
	@test -n "$(PYTHON)" || { echo "error: need python >= 3.11 on PATH (or make PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed.
$(VENV)/.bastion-install.stamp: pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -e .
	@touch $@

run: $(VENV)/.bastion-install.stamp
	$(VENV)/bin/bastion demo

test-deps: | $(PY)
	bash scripts/install-test-deps.sh

lint: test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict -p bastion
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(VENV)/.bastion-install.stamp
	$(PY) -m bench
	$(PY) -m bench.policy_engine

docs: $(VENV)/.bastion-install.stamp
	@mkdir -p docs
	$(PY) -m bastion config schema > docs/config.schema.json.tmp
	@mv docs/config.schema.json.tmp docs/config.schema.json
	$(PY) -m bastion config reference > docs/configuration.md.tmp
	@mv docs/configuration.md.tmp docs/configuration.md

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .import_linter_cache *.egg-info docs/config.schema.json.tmp docs/configuration.md.tmp
	find . -path ./.venv -prune -o -path ./tests/node/node_modules -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) tests/node/node_modules
