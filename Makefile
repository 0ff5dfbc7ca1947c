# Two entry points: `make demo` and `make test`. Each installs what it needs into .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PIP := $(VENV)/bin/pip install -c constraints.txt
STAMP_DEMO := $(VENV)/.installed-demo
STAMP_DEV := $(VENV)/.installed-dev
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)

.PHONY: demo test lint bench screenshot chromium clean

demo: $(STAMP_DEMO)
	$(VENV)/bin/accelscope demo

test: $(STAMP_DEV) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -ra

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check .

bench: $(STAMP_DEV)
	$(VENV)/bin/python benchmarks/overhead.py
	$(VENV)/bin/python benchmarks/overhead_tf.py
	$(VENV)/bin/python benchmarks/import_speed.py
	$(VENV)/bin/python benchmarks/many_ranks.py
	$(VENV)/bin/python benchmarks/analysis_speed.py
	$(VENV)/bin/python benchmarks/sampler_cpu.py

screenshot: $(STAMP_DEV) chromium
	$(VENV)/bin/python docs/screenshot.py -o docs

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$(IS_ROOT)" = yes ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's python3-venv"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); \
	  else echo "cannot create a virtual environment: install python3-venv"; exit 1; fi; }
	$(VENV)/bin/python -m pip install -q --upgrade pip

$(STAMP_DEMO): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -q -e '.[torch,dashboard]'
	@touch $@

$(STAMP_DEV): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -q -e '.[dev]'
	@touch $@ $(STAMP_DEMO)

# Browser tests drive Debian's Chromium. Installed when missing and we are root;
# otherwise those tests skip and say why.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$(IS_ROOT)" = yes ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: /usr/bin/chromium missing and not root: browser tests will be skipped"; fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
