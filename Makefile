# Two commands from a fresh clone (README): `make quickstart` and `make test`.
# Each does its own set-up: a virtualenv in .venv with hcdtf installed (editable) and its extras.
# On a GPU machine: `make quickstart EXTRAS=gpu,test` (tensorflow[and-cuda] instead of tensorflow-cpu).
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= cpu,test,export,docs
BIN := $(VENV)/bin

.PHONY: setup quickstart test docs bench gpu-check mutants clean

setup: $(VENV)/.installed-$(EXTRAS)

$(VENV)/.installed-$(EXTRAS): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install -q --no-deps 'tensorflow-serving-api==2.21.0'  # its protos only (see setup.cfg)
	$(BIN)/python -m pip install -q --no-deps 'keras-hub==0.32.0'  # not its tensorflow-text (see setup.cfg)
	touch $@

quickstart: setup
	$(BIN)/hcdtf quickstart

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=20  # two pytest-xdist workers, sharing the session fixtures (tests/conftest.py: one build, longest work first); the 20 slowest tests listed

# The docs site (MkDocs + Material, docs/ and mkdocs.yml) into site/; --strict: warnings are errors.
# The CLI and API reference are generated from the code (docs/hooks/reference.py).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: setup
	$(BIN)/python -m benchmarks

# A few minutes on one GPU: ResNet-50 training (float32 / mixed_float16, fused BN on/off), export,
# SavedModel at batch 1/64/256; prints JSON (README "GPU check"): make gpu-check EXTRAS=gpu,test,export
gpu-check: setup
	$(BIN)/python -m benchmarks.gpu_check

# Not in CI (half an hour on 2 cores): deliberate breakages, each in a copy of HEAD, must fail the
# tests meant to catch them (tools/mutants.py; list and last result: docs/development/mutants.md)
mutants: setup
	$(BIN)/python tools/mutants.py $(MUTANTS_ARGS)  # e.g. MUTANTS_ARGS="--worktree tta-2-views"

clean:
	rm -rf outputs/quickstart .pytest_cache site
