# Two commands on a fresh machine:  `make demo` (the closed-loop demo on the bundled world: `rlhf demo`)
# and `make test` (the test suite). Both create .venv when missing and install what they need,
# torch first and pinned (torch==2.13.0 is the CPU wheel; an unpinned torch pulls gigabytes of CUDA).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RLHF := $(VENV)/bin/rlhf
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= runs/demo

.PHONY: demo test install lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(RLHF) demo --out $(DEMO_DIR) --active-results bench/active_heads.json

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
