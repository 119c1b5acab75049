# The two commands that matter: `make run` and `make test`. Both bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

CONTRIB := $(wildcard contrib/*/pyproject.toml)

# Lumina and every contrib distribution, each installed as its own distribution (editable).
$(STAMP): pyproject.toml $(CONTRIB)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' $(foreach p,$(CONTRIB),-e $(dir $(p)))
	touch $(STAMP)

run: $(STAMP)
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
