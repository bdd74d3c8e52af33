# The two commands: `make run` (the console on embedded defaults) and `make test`.
# Any Python 3.11 or newer builds the venv: `make PYTHON=python3.12 run` picks another one.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run serve test lint format bench services docs clean

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

services: $(STAMP)
	bash .ci/services.sh $(PY)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

docs: $(STAMP)
	$(PY) -m bot.devtools.docs
