# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
CONFIG ?= configs/default.toml
OUT ?= runs/default
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-all bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-installs only when pyproject.toml or the torch pin changes, so a second call takes seconds.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	echo "$(TORCH)" > $(STAMP)

install: $(STAMP)
	@grep -qxF '$(TORCH)' $(STAMP) || { rm -f $(STAMP); $(MAKE) --no-print-directory $(STAMP) TORCH='$(TORCH)'; }

run: install
	$(VENV)/bin/sgdbayes run $(CONFIG) --out $(OUT)

test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pip install -q -e ".[dev,ray]"
	$(PY) -m pytest -q -m ""

bench: install
	for b in benchmarks/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
