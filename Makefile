# pacs-ai-node: `make run` installs and starts the node; `make test` installs and runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBIAN_TOOLS := /usr/sbin/Orthanc:orthanc /usr/bin/storescu:dcmtk /usr/bin/dciodvfy:dicom3tools \
                /usr/bin/systemd-analyze:systemd /usr/bin/chromium:chromium /usr/bin/promtool:prometheus

.PHONY: install run test test-slow fuzz lint system-deps clean bench bench-real

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned and installed first: a CPU build is on this machine's disk, and an
# unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,brain]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ainode db upgrade
	$(BIN)/ainode run

# Real peers for the integration tests: Debian's orthanc, dcmtk and dicom3tools; systemd-analyze
# checks the units in deploy/systemd; chromium runs the console's browser tests (Playwright drives
# it, no browser download) and promtool checks /metrics and the alert rules.
system-deps:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
	  [ -x "$${pair%%:*}" ] || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run as root or install them)"; exit 1; fi; \
	fi

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

test-slow: $(STAMP) system-deps
	$(BIN)/python -m pytest -m slow

# A long random fuzz of the SCP's PDU and DIMSE parsing (make test runs a short, fixed one).
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP) system-deps
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/dicom_node/test_fuzz.py -q

# Benchmarks against real peers (Orthanc, dcmtk); long, run by hand, never in `make test`.
# BENCH_QUICK=1 for a smaller run, BENCH_RUNS=n, BENCH_ONLY=ingest,ttr,seg,backlog.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,brain,brain-hdbet,bench]'
	touch $@

bench: $(BENCH_STAMP) system-deps
	$(BIN)/python -m bench.run

# Every real series in AINODE_REAL_DATA_DIR (default ../shared/data/real) through Orthanc -> node
# -> SEG + SR, checked against deepbet and the source images: bench/results/real_series.md.
bench-real: $(BENCH_STAMP) system-deps
	$(BIN)/python -m bench.real_series

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var .pytest_cache
