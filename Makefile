# CEMS - the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# pytest-xdist workers: `auto` is one per core. Each takes whole test files (--dist loadfile), so a
# module's fixtures are set up once, and starts its own local stack on free ports for the e2e tests.
TEST_WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: run test install lint typecheck unit integration e2e bench chromium clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "CEMS needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Start the whole system locally in the foreground (Ctrl-C stops it).
run: install
	$(BIN)/cems local

## Install everything and run every check: lint, types, unit, integration, e2e and browser tests.
test: install chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(PYTEST)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(PYTEST) tests/unit

integration: install
	$(PYTEST) tests/integration

e2e: install chromium
	$(PYTEST) tests/e2e

## Headless Chromium and its driver for the browser tests (Debian packages).
chromium:
	@bash scripts/ensure-chromium.sh

## Print the performance figures (ratios measured side by side in one run). The cold starts run in
## venvs holding only what each function has on Lambda, built on first use under .cems/bench-venvs/
## from Python 3.13 (BENCH_PYTHON, else python3.13 on PATH, else pyenv's; see bench/lambda_venv.py).
BENCH_PYTHON ?=
bench: install
	CEMS_BENCH_PYTHON=$(BENCH_PYTHON) $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache .cems/bench-venvs
