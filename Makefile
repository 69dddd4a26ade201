# netflowgen — two commands matter: `make demo` and `make test`. Both run `make setup` first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-out

.PHONY: setup demo test lint bench fuzz clean system-tools browser

setup: $(STAMP) system-tools

# Debian's flow tools: nfdump (nfcapd, nfdump, nfpcapd) and softflowd.
system-tools:
	@if ! command -v nfdump >/dev/null 2>&1 || ! command -v softflowd >/dev/null 2>&1; then \
	  echo "installing Debian nfdump and softflowd"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nfdump softflowd >/dev/null; \
	fi

# Debian's chromium: the headless browser the status-page tests render the page with.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing Debian chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

# torch==2.13.0 is installed first and explicitly: it is the local CPU wheel (an unpinned torch pulls CUDA).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,spark]'
	$(PY) -c 'from netflowgen.features.scatter import warm_up; warm_up()'  # compile the numba loop once (~3 s)
	touch $(STAMP)

test: setup browser lint
	@$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests (a failure here)' >&2; exit 1; fi; exit $$rc

# ruff and mypy over src/ (settings in pyproject.toml); part of `make test`.
lint: setup
	$(PY) -m ruff check src
	$(PY) -m mypy

demo: setup
	$(VENV)/bin/netflowgen demo --out $(DEMO_DIR)

# Throughput and memory against references measured in the same run (minutes; see docs).
bench: setup
	$(PY) benchmarks/simulate.py
	$(PY) benchmarks/features.py
	$(PY) benchmarks/pretrain.py
	$(PY) benchmarks/score.py
	$(PY) benchmarks/guard.py
	$(PY) benchmarks/live.py

# Seeded mutation fuzzing of every text reader, the settings loader and the model loader, deeper
# than the bounded run in `make test` (outcome table in docs/sources.md).
fuzz: setup
	$(PY) tests/fuzz.py --cases 2000 --seed 0
	$(PY) tests/fuzz.py --cases 2000 --seed 1

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
