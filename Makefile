# Two commands from a fresh clone (README): `make quickstart` and `make test`.
# Each does its own set-up: a virtualenv in .venv with hcdtf installed (editable) and its extras.
# On a GPU machine: `make quickstart EXTRAS=gpu,test` (tensorflow[and-cuda] instead of tensorflow-cpu).
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= cpu,test
BIN := $(VENV)/bin

.PHONY: setup quickstart test bench clean

setup: $(VENV)/.installed-$(EXTRAS)

$(VENV)/.installed-$(EXTRAS): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

quickstart: setup
	$(BIN)/hcdtf quickstart

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf outputs/quickstart .pytest_cache
