# The front door. `make run` serves the broker locally, `make test` runs every test;
# both create the virtualenv they need on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
comma := ,
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt layers/broker/requirements.txt | cksum | cut -d' ' -f1)

# SAM's python3.13 build workflow needs `python3.13` on PATH: the venv provides it.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

# A working python3.13: PATH first (a pyenv shim only counts if it runs), then pyenv's versions.
PYTHON313 ?= $(shell for p in "$$(command -v python3.13)" \
	"$$(pyenv root 2>/dev/null)"/versions/3.13*/bin/python3.13 "$$HOME"/.pyenv/versions/3.13*/bin/python3.13; do \
	[ -x "$$p" ] && "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && { echo "$$p"; break; }; \
	done)

.PHONY: help venv test unit integration lint format build run invoke bench clean validators sam-local mutate

help:
	@echo "make run      serve the broker on http://127.0.0.1:3000 (local upstream + Secrets Manager)"
	@echo "              PROFILE=bakrypt-testnet SECRET=secret.json  to use a real upstream"
	@echo "              ORIGINS=http://localhost:5173,http://localhost:8080  the SPA origins allowed"
	@echo "              DELIVERY=cookie  BFF mode (the demo SPA at / follows the mode)"
	@echo "              FLOW=code  sign in with the authorization code flow (OIDC, PKCE; cookie mode)"
	@echo "make test     every test (unit + integration through the Lambda emulator)"
	@echo "make lint     ruff, mypy --strict, cfn-lint, sam validate --lint"
	@echo "make build    sam build"
	@echo "make invoke   FUNCTION=PasswordFunction EVENT=events/password-json.json"
	@echo "make sam-local  sam local start-api in Docker against the local upstream (port 3000)"
	@echo "make bench    the performance benchmark (writes bench/results.local.md; RECORD=1: bench/results.md)"
	@echo "make validators  recompile the routes' JSON Schemas after editing broker/schemas.py"
	@echo "make mutate   mutation testing of the core (long; not part of make test): writes mutation/report.md"

venv: $(STAMP)

$(STAMP): requirements-dev.txt layers/broker/requirements.txt
	@if [ -z "$(PYTHON313)" ]; then \
		echo "Python 3.13 (the Lambda runtime this targets) was not found on PATH or under pyenv."; \
		echo "Install it, e.g. 'pyenv install 3.13' or your OS package 'python3.13' (with venv), then re-run."; \
		exit 1; fi
	@[ -x $(PY) ] || { echo "Creating $(VENV) with $(PYTHON313)" >&2; $(PYTHON313) -m venv $(VENV); }
	@# on stderr, as everything here but a target's own result (`make invoke | jq .` on a first run)
	@echo "$(PY) -m pip install -r requirements-dev.txt" >&2
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt >&2
	@rm -f $(VENV)/.installed-*; touch $@

# The BFF browser test drives Debian's Chromium (a test tool's own browser download cannot work here).
BROWSER := /usr/bin/chromium /usr/bin/chromedriver
$(BROWSER):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium and chromium-driver for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "The browser test needs Chromium and ChromeDriver: sudo apt-get install chromium chromium-driver"; exit 1; fi

# The interoperability tests load JavaScript client libraries in Chromium: pinned in
# tests/package.json and package-lock.json, installed from npm like the venv, once per change.
NODE_STAMP := tests/node_modules/.installed-$(shell cat tests/package.json tests/package-lock.json | cksum | cut -d' ' -f1)
$(NODE_STAMP): tests/package.json tests/package-lock.json
	@command -v npm >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's npm for the interoperability tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	else echo "The interoperability tests need npm: sudo apt-get install npm"; exit 1; fi; }
	npm ci --prefix tests --no-audit --no-fund --silent
	@rm -f tests/node_modules/.installed-*; touch $@

# The sam local tests run Docker: the machine's daemon, else a private dockerd (docker.io),
# and a stand-in for the Lambda image when no registry is reachable (debootstrap).
DOCKER_TOOLS := /usr/sbin/dockerd /usr/sbin/debootstrap
$(DOCKER_TOOLS):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's docker.io and debootstrap for the sam local tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null; \
	else echo "The sam local tests need Docker: sudo apt-get install docker.io debootstrap," \
		"or leave them out: make test PYTEST_ARGS=\"-m 'not samlocal'\""; fi

test: venv $(BROWSER) $(NODE_STAMP) $(DOCKER_TOOLS)
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit

integration: venv $(BROWSER) $(NODE_STAMP) $(DOCKER_TOOLS)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

sam-local: build $(DOCKER_TOOLS)
	$(PY) -m local.samlocal $(if $(PORT),--port $(PORT))

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/broker local tests bench
	@# each function is its own `app` module, as in Lambda: check them one at a time
	@for f in functions/*/; do echo "mypy $$f"; MYPYPATH=layers/broker $(VENV)/bin/mypy --strict $$f/app.py || exit 1; done
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/sam validate --lint --template template.yaml

# Mutation testing (mutmut): long, so not part of `make test`. MUTATE_JOBS=1 on a busy machine;
# MUTATE_ARGS=--keep re-tests only the functions changed since the last run.
MUTATE_JOBS ?= 2
mutate: venv
	$(PY) mutation/run.py --jobs $(MUTATE_JOBS) $(MUTATE_ARGS)

validators: venv
	$(PY) layers/broker/generate_validators.py

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

build: venv
	$(VENV)/bin/sam build --cached

RUN_ARGS := $(if $(PROFILE),--profile '$(PROFILE)') $(if $(SECRET),--secret-file '$(SECRET)') $(if $(DELIVERY),--env BROKER_REFRESH_DELIVERY=$(DELIVERY)) $(if $(FLOW),--env BROKER_LOGIN_FLOWS=$(FLOW) $(if $(filter code,$(subst $(comma), ,$(FLOW))),$(if $(DELIVERY),,--env BROKER_REFRESH_DELIVERY=cookie))) $(if $(PORT),--port $(PORT)) $(if $(ORIGINS),--origins '$(ORIGINS)')
run: build
	$(PY) -m local.runner --no-build $(RUN_ARGS)

FUNCTION ?= PasswordFunction
EVENT ?= events/password-json.json
# stdout is the Lambda response alone (`make invoke ... | jq .`): no echoed recipe, and
# local.invoke runs `sam build --cached` itself with its output on stderr, as every log line.
invoke: venv
	@$(PY) -m local.invoke $(FUNCTION) $(EVENT) $(if $(ENV_VARS),--env-vars $(ENV_VARS))

# Results go to untracked bench/*.local.md; RECORD=1 writes the tracked bench/results*.md.
BENCH_ARGS := $(if $(filter 1 yes true,$(RECORD)),--record)
bench: build
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/guards.py $(BENCH_ARGS)

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis .mutation

# Deploy and delete a named environment of samconfig.toml (docs/deploy.md). The environment's
# parameters (in <env>.global) reach sam build too, so Architecture=arm64 builds arm64 wheels.
.PHONY: deploy delete
deploy: venv
	@[ -n "$(ENV)" ] || { echo "Usage: make deploy ENV=<an environment of samconfig.toml, e.g. bakrypt-testnet>"; exit 1; }
	$(PY) -m local.samconfig '$(ENV)'
	$(VENV)/bin/sam build --config-env '$(ENV)'
	$(VENV)/bin/sam deploy --config-env '$(ENV)'

delete: venv
	@[ -n "$(ENV)" ] || { echo "Usage: make delete ENV=<an environment of samconfig.toml>"; exit 1; }
	$(VENV)/bin/sam delete --config-env '$(ENV)'
