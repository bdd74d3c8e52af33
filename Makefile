# The two commands: `make run` (the console on embedded defaults) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run serve test lint format bench services docs clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV) 2>/dev/null || \
		(rm -rf $(VENV) && python3 -m venv --without-pip $(VENV) && $(PY) scripts/bootstrap_pip.py)
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
	$(PY) -m bot.docs
