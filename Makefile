# Two commands do all set-up: `make serve` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# CPU-only machines get the CPU build of torch; set TORCH_SPEC to install another (see README).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench env clean browser

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	else $(PIP) install --quiet "$(TORCH_SPEC)"; fi
	$(PIP) install --quiet -e ".[dev]"
	# spandrel and open_clip are installed without their torchvision dependency: there is no CPU
	# build of torchvision, and diffusiond only reads open_clip's vocabulary file.
	$(PIP) install --quiet --no-deps spandrel==0.4.2 open_clip_torch==3.3.0
	touch $(STAMP)

env: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/diffusiond serve

# The web console test drives a real headless Chromium; install Debian's when we can (root + apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed: the browser tests will be skipped"; fi; }

# pytest in TEST_WORKERS processes, a test file at a time each (module fixtures stay shared); 0: serial
TEST_WORKERS ?= 2

test: $(STAMP) browser
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .diffusiond
