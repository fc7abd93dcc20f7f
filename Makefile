# The front door. `make run` serves the broker locally, `make test` runs every test;
# both create the virtualenv they need on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
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

.PHONY: help venv test unit integration lint format build run invoke bench clean validators

help:
	@echo "make run      serve the broker on http://127.0.0.1:3000 (local upstream + Secrets Manager)"
	@echo "              PROFILE=bakrypt-testnet SECRET=secret.json  to use a real upstream"
	@echo "make test     every test (unit + integration through the Lambda emulator)"
	@echo "make lint     ruff, mypy --strict, cfn-lint, sam validate --lint"
	@echo "make build    sam build"
	@echo "make invoke   FUNCTION=PasswordFunction EVENT=events/password-json.json"
	@echo "make bench    the performance benchmark (writes bench/results.md)"
	@echo "make validators  recompile the routes' JSON Schemas after editing broker/schemas.py"

venv: $(STAMP)

$(STAMP): requirements-dev.txt layers/broker/requirements.txt
	@if [ -z "$(PYTHON313)" ]; then \
		echo "Python 3.13 (the Lambda runtime this targets) was not found on PATH or under pyenv."; \
		echo "Install it, e.g. 'pyenv install 3.13' or your OS package 'python3.13' (with venv), then re-run."; \
		exit 1; fi
	@[ -x $(PY) ] || { echo "Creating $(VENV) with $(PYTHON313)"; $(PYTHON313) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*; touch $@

# The BFF browser test drives Debian's Chromium (a test tool's own browser download cannot work here).
BROWSER := /usr/bin/chromium /usr/bin/chromedriver
$(BROWSER):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium and chromium-driver for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "The browser test needs Chromium and ChromeDriver: sudo apt-get install chromium chromium-driver"; exit 1; fi

test: venv $(BROWSER)
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest tests/unit

integration: venv $(BROWSER)
	$(PY) -m pytest tests/integration

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/broker local tests bench
	@# each function is its own `app` module, as in Lambda: check them one at a time
	@for f in functions/*/; do echo "mypy $$f"; MYPYPATH=layers/broker $(VENV)/bin/mypy --strict $$f/app.py || exit 1; done
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/sam validate --lint --template template.yaml

validators: venv
	$(PY) layers/broker/generate_validators.py

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

build: venv
	$(VENV)/bin/sam build --cached

RUN_ARGS := $(if $(PROFILE),--profile '$(PROFILE)') $(if $(SECRET),--secret-file '$(SECRET)') $(if $(DELIVERY),--env BROKER_REFRESH_DELIVERY=$(DELIVERY)) $(if $(PORT),--port $(PORT))
run: build
	$(PY) -m local.runner --no-build $(RUN_ARGS)

FUNCTION ?= PasswordFunction
EVENT ?= events/password-json.json
invoke: build
	$(PY) -m local.invoke --no-build $(FUNCTION) $(EVENT) $(if $(ENV_VARS),--env-vars $(ENV_VARS))

bench: build
	$(PY) bench/run.py
	$(PY) bench/guards.py

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis

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
