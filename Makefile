# The two set-up commands of the README. Each creates .venv on first use (pip, Python 3.10+).
#   make demo   -> the main job: `frankensplit demo` on its embedded defaults
#   make test   -> ruff, then the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
LINT    = $(VENV)/bin/ruff check frankensplit tests benchmarks tools
export HF_HUB_OFFLINE = 1

.PHONY: demo test venv lint results mutants

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/frankensplit demo

test: $(STAMP)
	$(LINT)
	$(PY) -m pytest

lint: $(STAMP)
	$(LINT)

# Regenerate the README's results table and plot (needs ../shared/data and trained zoo models).
results: $(STAMP)
	$(PY) benchmarks/results.py

# The mutation check (tools/mutants.py, not part of `make test`): plausible bugs, each applied to a
# temporary copy of HEAD, must each make the tests that guard against it fail.
mutants: $(STAMP)
	nice -n 10 $(PY) tools/mutants.py
