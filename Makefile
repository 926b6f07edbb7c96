# crmsync: `make run` serves the whole service locally; `make test` runs every check.
# Both create the Python 3.13 environment (.venv) and install what they need first.

SHELL := /bin/bash
# The first Python 3.13 that actually runs (a pyenv shim may exist without a 3.13 behind it).
PYTHON313 ?= $(shell for p in $$(ls -d $$HOME/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV) \
	$$(command -v python3.13); do "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null \
	&& { echo "$$p"; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

TENANT ?= t1
USER_ID ?= u1
ROLE ?= admin

.PHONY: run demo test token lint typecheck cfn-lint sam-validate pytest test-servers bench build schemas clean

$(STAMP): requirements-dev.txt shared/requirements.txt
	@if [ -z "$(PYTHON313)" ]; then echo "Python 3.13 is needed: put python3.13 on PATH (e.g. pyenv install 3.13)"; exit 1; fi
	@[ -x $(PY) ] || $(PYTHON313) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m local run

# The mail (Gmail, Outlook) and Google Calendar scenarios against `make run` (started for the demo if it is not running).
demo: $(STAMP)
	$(PY) -m local.demo

# make token TENANT=t1 USER=u1 ROLE=admin  (USER overrides the shell's USER for this call)
token: $(STAMP)
	@$(PY) -m local token --tenant $(TENANT) --user $(if $(filter command line,$(origin USER)),$(USER),$(USER_ID)) --role $(ROLE)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy shared/crmsync local functions bench scripts

cfn-lint: $(STAMP)
	$(VENV)/bin/cfn-lint template.yaml

sam-validate: $(STAMP)
	$(VENV)/bin/sam validate --lint --template template.yaml

# Real servers the tests start: Dovecot (IMAP) from Debian's packages. The SMTP server
# (aiosmtpd) comes with the Python requirements.
test-servers:
	@if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Dovecot for the IMAP tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null; \
	  else echo "the IMAP tests need Dovecot: sudo apt-get install dovecot-imapd"; exit 1; fi; \
	fi

pytest: $(STAMP) test-servers
	$(PY) -m pytest --cov --cov-report=term --cov-report=xml:coverage.xml

test: lint typecheck cfn-lint sam-validate pytest

bench: $(STAMP)
	$(PY) -m bench

# sam build needs python3.13 on PATH: the venv's is.
build: $(STAMP)
	$(VENV)/bin/sam build --template template.yaml

schemas: $(STAMP)
	$(PY) -m scripts.generate_docs

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache coverage.xml .coverage
