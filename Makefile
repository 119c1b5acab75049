# The two commands that matter: `make run` and `make test`. Both bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

CORE_STAMP := $(VENV)/.installed-core
CONTRIB := $(wildcard contrib/*/pyproject.toml)
# lumina-semantic needs torch: name a CPU build in the same pip command, or pip may pick a CUDA one (GBs)
TORCH ?= torch==2.13.0

# `make run` needs Lumina alone (editable).
$(CORE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(CORE_STAMP)

# The tests: Lumina with its test tools, and every contrib distribution installed as its own (editable).
$(STAMP): $(CORE_STAMP) $(CONTRIB)
	$(BIN)/python -m pip install --quiet -e '.[test]' $(TORCH) $(foreach p,$(CONTRIB),-e $(dir $(p)))
	touch $(STAMP)

run: $(CORE_STAMP)
	$(BIN)/lumina serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy lumina_core web

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; if [ $$status -eq 5 ]; then exit 0; else exit $$status; fi

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) build dist *.egg-info
