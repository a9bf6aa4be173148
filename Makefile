# make demo: set up .venv, build and run the demo batch, serve the app (Voila) on 127.0.0.1;
# `make demo ARGS=--no-serve` stops after the batch.  make test: set up .venv (+ test extras and
# the system packages the tests need), lint, build the docs and run the whole suite (notebooks
# and real-browser tests included).  make docs: the Sphinx user guide and API reference.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# lavapipe (software Vulkan) for fastplotlib; Debian's Chromium for the browser tests; SLURM and
# munge for the private single-node cluster of the SLURM tests (tests/slurm_local.py)
APT_PACKAGES := mesa-vulkan-drivers libvulkan1 chromium slurm-wlm munge

.PHONY: venv app-venv test-venv system-deps demo app docs notebooks test lint clean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "mesmerize_widgets needs Python >= 3.11, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.app-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[app]"
	@touch $@

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

venv: $(VENV)/.installed

app-venv: $(VENV)/.app-installed

test-venv: $(VENV)/.test-installed

# Software Vulkan (lavapipe) so fastplotlib renders on a CPU-only machine; Chromium for the
# browser tests (Playwright drives /usr/bin/chromium: never a browser download); slurm-wlm and
# munge, whose daemons the SLURM tests start themselves (as root; skipped otherwise).
system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES); \
	fi

demo: app-venv
	$(PY) -m mesmerize_widgets.cli demo $(ARGS)

# serve the app over an existing batch: make app ARGS=path/to/batch
app: app-venv
	$(PY) -m mesmerize_widgets.cli app $(ARGS)

docs: test-venv
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# the tutorial notebooks alone, with nbmake (tests/test_notebooks.py runs them in `make test`)
notebooks: test-venv
	$(PY) -m pytest --nbmake notebooks -o addopts= -p no:cacheprovider

test: test-venv system-deps
	$(PY) -m ruff check mesmerize_widgets tests benchmarks
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	$(PY) -m pytest $(ARGS)

lint: test-venv
	$(PY) -m ruff check mesmerize_widgets tests benchmarks

clean:
	rm -rf $(VENV) demo_batch demo_batch_data .pytest_cache docs/_build test-artifacts
