# WHK — the two set-up commands are `make up` and `make test`; both build the virtualenv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test check lint typecheck unit bench lock clean browser brokers

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

## Run WHK: private PostgreSQL (unless WHK_DATABASE_URL is set), migrations, API and dispatcher.
## In development (WHK_ENV unset) the settings exempt loopback from the SSRF guard (printed as a warning),
## in every process alike, so local receivers work.
up: $(STAMP)
	exec $(BIN)/whk up

## pytest's worker processes (pytest-xdist): one per core, each with its own throwaway PostgreSQL. A test
## file stays on one worker (its module fixtures are built once). PYTEST_WORKERS=0 runs in this process.
PYTEST_WORKERS ?= auto
XDIST := -n $(PYTEST_WORKERS) --dist loadfile

## Lint, type-check and run the whole test suite (browser tests included) against throwaway PostgreSQL servers.
test: lint typecheck browser brokers
	$(BIN)/python -m pytest $(XDIST) -m "not bench" $(PYTEST_ARGS)

## Chromium for the dashboard's Playwright tests (Debian's package; Playwright itself is in the dev extra).
browser: $(STAMP)
	scripts/setup-browser

## Redis and RabbitMQ for the queue tests (Debian's redis-server and rabbitmq-server; the tests start their own).
brokers: $(STAMP)
	scripts/setup-brokers

## The edit-run loop: lint, types and every test not marked slow or e2e (the whole suite stays `make test`).
check: lint typecheck brokers
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not e2e and not bench" -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check whk whk_cli dispatcher api ops tests bench examples
	$(BIN)/ruff format --check whk whk_cli dispatcher api ops tests bench examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

## Benchmarks: each prints GOAL lines with ratios against a baseline measured in the same run.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

## Re-pin every dependency after changing pyproject.toml.
lock: $(STAMP)
	( echo "# Exact versions for reproducible installs (pip install -c requirements.lock). Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^whk' ) > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
