# netflowgen — two commands matter: `make demo` and `make test`. Both run `make setup` first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-out

.PHONY: setup demo experiment-tables test lint bench fuzz clean system-tools browser

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

# The paper's ablations on the demo's ISP (runs `make demo` first when its output is absent): Table 8
# (nodes unseen in pre-training), Table 9 (86 vs 6 features), Table 10 (model sizes), each backbone
# pre-trained on a step budget (100 steps) and cached in $(DEMO_DIR)/report-tables/backbones; the three
# parts took 78-176 s each, run separately on the shared 2-core machine (docs/model.md).
# PARTS=labels,table8,table9,table10 adds the label-efficiency curve: every method x 7 label counts x 3
# seeds, TF included, far longer on a CPU.
PARTS ?= table8,table9,table10
experiment-tables: setup
	@test -f $(DEMO_DIR)/features.parquet || $(MAKE) demo
	$(VENV)/bin/netflowgen experiment paper --data $(DEMO_DIR) --model $(DEMO_DIR)/model --parts $(PARTS) \
	  --out $(DEMO_DIR)/report-tables

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
