# Everything a fresh machine needs is installed by these targets: no step by hand first.
# `make demo` installs what the package needs to run; `make test` and `make lint` add the dev tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint install clean

$(BASE): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel; the package's own range (>=2.5,<2.15) then installs nothing more
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $(BASE)

$(DEV): $(BASE)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(DEV)

install: $(DEV)

demo: $(BASE)
	$(BIN)/frugal demo

test: $(DEV)
	$(BIN)/python -m pytest -x -q -p no:cacheprovider

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
