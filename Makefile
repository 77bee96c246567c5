# WHK — the two set-up commands are `make up` and `make test`; both build the virtualenv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint typecheck unit bench lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

## Run WHK: private PostgreSQL (unless WHK_DATABASE_URL is set), migrations, API and dispatcher.
## Outside production, loopback is exempt from the SSRF guard (printed as a warning) so local receivers work.
up: $(STAMP)
	@if [ "$${WHK_ENV:-development}" != production ]; then \
	  export WHK_ALLOW_PRIVATE_CIDRS="$${WHK_ALLOW_PRIVATE_CIDRS-127.0.0.0/8,::1/128}"; fi; \
	exec $(BIN)/whk up

## Lint, type-check and run the whole test suite against throwaway PostgreSQL servers.
test: lint typecheck
	$(BIN)/python -m pytest -m "not bench" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check whk dispatcher api tests bench examples
	$(BIN)/ruff format --check whk dispatcher api tests bench examples

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
