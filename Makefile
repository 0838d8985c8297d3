# The README's two commands: `make demo` and `make test`. Each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?= 30
SEED ?= 1
DEMO_STATE ?= .demo

.PHONY: demo test lint typecheck pytest clean model install uninstall

# Model training (not needed for demo or test): `make model REAL=../shared/data/plates-real`.
# Resumable: rerun the same command after an interruption. See node/infer/models/plates.md.
TRAIN_VENV := .venv-train
TRAIN_STAMP := $(TRAIN_VENV)/.installed
REAL ?= ../shared/data/plates-real
RUN ?= runs/det
STEPS ?= 9000

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/roadnode demo --seed $(SEED) --duration $(DURATION) --state-dir $(DEMO_STATE)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

$(TRAIN_STAMP): setup.cfg pyproject.toml
	test -x $(TRAIN_VENV)/bin/python || $(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[train]'
	touch $@

model: $(TRAIN_STAMP)
	$(TRAIN_VENV)/bin/python -m tools.detector.train --real $(REAL) --out $(RUN) \
		--seed $(SEED) --steps $(STEPS)
	$(TRAIN_VENV)/bin/python -m tools.detector.export --run $(RUN) --real $(REAL) \
		--out node/infer/models
	$(TRAIN_VENV)/bin/python -m tools.detector.card --run $(RUN) --real $(REAL) \
		--out node/infer/models/plates-figures.json --card node/infer/models/plates.md

clean:
	rm -rf $(VENV) $(DEMO_STATE) .mypy_cache .ruff_cache .pytest_cache

# On the Pi (Raspberry Pi OS Bookworm), as root: `sudo make install`, `sudo make uninstall`
# (`PURGE=1` also removes evidence, keys, config and the user). docs/operations.md, "Install".
install:
	scripts/install.sh

uninstall:
	PURGE=$(PURGE) scripts/uninstall.sh
