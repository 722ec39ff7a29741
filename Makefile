# One-command set-up: every target builds the virtual environment it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: venv test demo clean-venv

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

## Run the test suite (CPU, no network): one worker per core (a test file stays on one worker, so its
## module fixtures are made once), then the tests marked serial alone, on every thread.
JOBS ?= auto
test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -m "not slow and not serial" tests
	$(PY) -m pytest -q -m "serial and not slow" tests

## The whole CEKD pipeline on the synthetic data (options: make demo ARGS="--epochs 5").
demo: venv
	$(PY) run_cekd.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
