# make demo: set up .venv and run the demo batch.  make test: set up .venv (+ test extras and the
# system packages the tests need) and run the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
APT_PACKAGES := mesa-vulkan-drivers libvulkan1

.PHONY: venv test-venv system-deps demo test lint clean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "mesmerize_widgets needs Python >= 3.11, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

venv: $(VENV)/.installed

test-venv: $(VENV)/.test-installed

# Software Vulkan (lavapipe) so fastplotlib renders offscreen on a CPU-only machine.
system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES); \
	fi

demo: venv
	$(PY) -m mesmerize_widgets.cli demo $(ARGS)

test: test-venv system-deps
	$(PY) -m ruff check mesmerize_widgets tests benchmarks
	$(PY) -m pytest $(ARGS)

lint: test-venv
	$(PY) -m ruff check mesmerize_widgets tests benchmarks

clean:
	rm -rf $(VENV) demo_batch demo_batch_data .pytest_cache
