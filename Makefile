# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
CONFIG ?= configs/default.toml
OUT ?= runs/default
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The GPU check (README "One GPU"): the wheels the GPU machine's image lacks, for its Python 3.12, and a
# dry-run venv that holds only what that image holds (benchmarks/device/*.txt).
DEVICE_WHEELS ?= .device-wheels
DEVICE_VENV ?= .device-venv

.PHONY: install run test test-all bench clean gpu-wheels device-venv

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

test: install device-venv
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pip install -q -e ".[dev,ray]"
	$(PY) -m pytest -q -m ""

bench: install
	for b in benchmarks/*.py; do $(PY) $$b --quick || exit 1; done

gpu-wheels: $(DEVICE_WHEELS)/.downloaded

$(DEVICE_WHEELS)/.downloaded: benchmarks/device/carried.txt
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $(DEVICE_WHEELS) -r $<
	touch $@

device-venv: $(DEVICE_VENV)/.installed

$(DEVICE_VENV)/.installed: benchmarks/device/carried.txt benchmarks/device/image.txt
	rm -rf $(DEVICE_VENV)
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install -q "$(TORCH)" -r benchmarks/device/image.txt
	$(DEVICE_VENV)/bin/python -m pip download -q --no-deps -d $(DEVICE_VENV)/wheels -r benchmarks/device/carried.txt
	touch $@

clean:
	rm -rf $(VENV) $(DEVICE_VENV) $(DEVICE_WHEELS) runs .pytest_cache
