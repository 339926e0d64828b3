# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint proto proto-check bench deb wheelhouse clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "python3 (>= 3.11) is required"; exit 1; }
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/gen_proto.py --check

test: lint
	$(BIN)/python -m pytest -q

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.agent_footprint
	$(BIN)/python -m benchmarks.ingest --agents 200 --seconds 10
	$(BIN)/python -m benchmarks.fleet_memory --gpus 50000 --sweep

# Debian packages into dist/ (packaging/README.md). Offline: `make wheelhouse` once, then
# `make deb WHEELHOUSE=build/wheelhouse`.
WHEELHOUSE ?=
deb:
	packaging/build-deb.sh --out dist $(if $(WHEELHOUSE),--wheel-dir $(WHEELHOUSE))

wheelhouse:
	packaging/build-deb.sh --fill-wheel-dir build/wheelhouse

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
