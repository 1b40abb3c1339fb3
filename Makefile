# doudi: `make demo` sets up and runs the main job on a generated province; `make test` tests.
SHELL := /bin/bash
PY := .venv/bin/python
UV := .venv/bin/uv
DEMO_DIR ?= workspace/demo
DEMO_HOUSEHOLDS ?= 5000
DEMO_MONTHS ?= 36
DEMO_AS_OF ?= 2025-12
PORT ?= 3000
HOST ?= 127.0.0.1

export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true

.PHONY: install system-deps demo serve test lint typecheck bench audit clean

install: .venv/.installed  ## create .venv from uv.lock; the CLI lands at .venv/bin/doudi

.venv/.installed: uv.lock pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) sync --frozen --inexact --extra spark --python $(PY)
	touch $@

SYSTEM_PACKAGES := fonts-wqy-zenhei chromium libreoffice-calc-nogui poppler-utils openjdk-17-jre-headless
system-deps:  ## Debian packages for figures in Chinese, the report check and the sheet render check
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

demo: install  ## generate a province, then run the monthly job on it and show the top alerts
	.venv/bin/doudi simulate --households $(DEMO_HOUSEHOLDS) --months $(DEMO_MONTHS) \
		--start 2023-01 --seed 7 --out $(DEMO_DIR)/province
	DOUDI_HOME=$(DEMO_DIR)/home .venv/bin/doudi monthly $(DEMO_DIR)/province/raw --as-of $(DEMO_AS_OF)

serve: install  ## the scoring API (docs/api.md) on HOST:PORT; DOUDI_HOME defaults to the demo's
	DOUDI_HOME="$${DOUDI_HOME:-$(DEMO_DIR)/home}" .venv/bin/doudi serve --host $(HOST) --port $(PORT)

test: install  ## lint, types, then the whole suite (PostgreSQL tests use 127.0.0.1:5432)
	@$(MAKE) --no-print-directory system-deps || echo "warning: could not install $(SYSTEM_PACKAGES): tests that need them skip or fail"
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -n 2 -q

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: install
	.venv/bin/mypy

audit: install  ## pip-audit of every package in uv.lock, and the security floors (exit 3: some not audited)
	$(PY) bench/audit_deps.py $(AUDIT_FLAGS)

bench: install  ## benchmarks; figures go to docs/benchmarks.md by hand
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf workspace .pytest_cache .ruff_cache .mypy_cache
