# Quick start: `make run` trains (first time) and serves; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.toml

.PHONY: run test lint browser bench-coldstart bench-recovery bench-serving bench-drift bench-swap clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes; the stamp remembers the last install.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/selfheal run --config $(CONFIG)

# The dashboard tests drive Debian's chromium; installed here when missing (needs root, as in CI).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

test: $(VENV)/.installed-test browser
	$(BIN)/ruff check selfheal_daemon service tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check selfheal_daemon service tests bench
	$(BIN)/mypy

bench-coldstart: $(VENV)/.installed
	$(BIN)/python bench/cold_start.py

# Builds its own bench/.venv (with supervisord, never a project dependency); QUICK=1 for a short run.
bench-recovery:
	$(PYTHON) bench/recovery.py $(if $(QUICK),--quick) --json bench/out/recovery.json

# Side by side with a bare FastAPI app under wrk (installed with apt-get if missing).
bench-serving:
	$(PYTHON) bench/serving.py $(if $(QUICK),--quick) --json bench/out/serving.json

# Builds its own bench/.venv-drift (with Evidently, never a project dependency); QUICK=1 for a short run.
bench-drift:
	$(PYTHON) bench/drift.py $(if $(QUICK),--quick) --json bench/out/drift.json

# A model change under load: swapped in place inside the workers, against replacing the workers.
bench-swap:
	$(PYTHON) bench/swap.py $(if $(QUICK),--quick) --json bench/out/swap.json

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
