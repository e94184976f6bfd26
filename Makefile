# The two commands (README): `make serve` and `make test`. Both set everything up on a
# fresh machine: a virtualenv with the project and its embedded database.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit integration bench clean portal

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

# The portal web app's two npm libraries (fhirclient, chart.js), exactly as locked in
# portal_app/package-lock.json; served from their own published builds (docs/portal-app.md).
PORTAL_STAMP := portal_app/node_modules/.package-lock.json
$(PORTAL_STAMP): portal_app/package.json portal_app/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix portal_app

portal: $(PORTAL_STAMP)

serve: $(STAMP) portal
	$(BIN)/fhir-server serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) portal lint typecheck
	bash scripts/ensure_chromium.sh
	# Two workers, one embedded database each; a module's tests stay on one worker, so a
	# module's seeded server is built once.
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

# Every issue 11 ratio in one run on one database (bench/README.md); bigger sizes with e.g.
# make bench BENCH_ARGS="--sizes 10000,40000"
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m bench.all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache portal_app/node_modules test-artifacts
