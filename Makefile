# The two commands: `make run` (the console on embedded defaults) and `make test`.
# Any Python 3.11 or newer builds the venv: `make PYTHON=python3.12 run` picks another one.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run serve test lint format bench soak mutate services docs clean lock images

# What is wrong with PYTHON, if anything: checked (by any Python, even 2) before a venv is made.
USE_OTHER = point make at another one: make PYTHON=python3.12 $(or $(MAKECMDGOALS),run)
PYTHON_PROBLEM = $(shell if command -v $(PYTHON) >/dev/null 2>&1; then \
	$(PYTHON) -c 'import sys; v = sys.version_info; print("" if v >= (3, 11) else "$(PYTHON) is Python %d.%d" % (v[0], v[1]))'; \
	else echo "$(PYTHON) not found"; fi)

$(STAMP): pyproject.toml
	$(if $(strip $(PYTHON_PROBLEM)),$(error $(strip $(PYTHON_PROBLEM)); uat-bot needs Python 3.11 or newer ($(USE_OTHER))))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) 2>/dev/null || \
		(rm -rf $(VENV) && $(PYTHON) -m venv --without-pip $(VENV) && $(PY) scripts/bootstrap_pip.py)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/uat-bot console

serve: $(STAMP)
	$(VENV)/bin/uat-bot serve

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) -m bench

# The real `uat-bot serve` (two replicas on DynamoDB, then one on SQLite) under storms, commands
# and faults for SOAK_MINUTES, then its invariants: one table, exit status 1 on any violation.
SOAK_MINUTES ?= 5
soak: $(STAMP)
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) -m bench.soak

# Mutation testing of the code that guards the doors (bot/devtools/mutate.py): one mutant at a
# time, each against its target's fast tests; slow (tens of minutes), so not part of .ci/run.
# `make mutate TARGETS=store` runs one target.
mutate: $(STAMP)
	$(PY) -m bot.devtools.mutate $(TARGETS)

services: $(STAMP)
	bash .ci/services.sh $(PY)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

docs: $(STAMP)
	$(PY) -m bot.devtools.docs

# requirements.lock: pyproject's runtime dependencies, pinned with their hashes for every platform
# (the bot's Dockerfile installs exactly these). Run after changing [project] dependencies.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--no-config --native-tls \
		--custom-compile-command "make lock" --quiet -o requirements.lock

# uat-bot:local and uat-container:local, built for real on uat-base:bookworm (debootstrap, cached
# in the docker engine): see scripts/images.sh. Needs a docker engine (make services) and root.
images:
	bash scripts/images.sh
