# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch lies on this machine's disk; an unpinned torch would pull a CUDA build.
TORCH_PIN ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install browser run test lint console-screenshots bench-quality bench-speed bench-service clean

# One pip call for both: the service depends on the SDK (unlearn-client), which comes from sdk/.
$(STAMP): pyproject.toml sdk/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e "./sdk[cli]" -e ".[service,bench,dev,hf]"
	touch $(STAMP)

install: $(STAMP)

# The embedded default needs an admin key: one is made on first run and kept in var/admin-key
# (mode 0600), unless UNLEARN_ADMIN_KEY is set.
run: $(STAMP)
	@mkdir -p var && umask 077 && test -s var/admin-key || \
		$(BIN)/python -c "import secrets; print('dev-' + secrets.token_urlsafe(32))" > var/admin-key
	@echo "admin key: var/admin-key"
	UNLEARN_ADMIN_KEY="$${UNLEARN_ADMIN_KEY:-$$(cat var/admin-key)}" \
		$(BIN)/unlearn-service run --host $(HOST) --port $(PORT)

# The console's browser tests drive Debian's Chromium through Playwright, which cannot download
# browsers of its own here: install the distribution's when it is missing and we are root.
# Elsewhere the tests say how (and with CI=true they fail: they never skip in CI).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "browser: $(CHROMIUM) is missing; as root run: apt-get install chromium chromium-driver" >&2; fi

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Runs the console's browser tests and keeps their screenshots in docs/console/ (docs/console.md).
console-screenshots: $(STAMP) browser
	UNLEARN_CONSOLE_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q -p no:cacheprovider tests/console

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench-quality: $(STAMP)
	$(BIN)/python -m benchmarks.quality $(BENCH_ARGS)

bench-speed: $(STAMP)
	$(BIN)/python -m benchmarks.speed $(BENCH_ARGS)

# Starts the API and a worker as processes on a free port; PostgreSQL + Redis too when reachable.
bench-service: $(STAMP)
	$(BIN)/python -m benchmarks.service $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
