# Member Center Kiosk: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= var
STAMP := $(VENV)/.installed
# Debian packages the appliance and its tests use.
DEB_PACKAGES := mosquitto postgresql libzbar0 xvfb xauth fonts-noto-cjk sqlite3 shellcheck \
	mmdebstrap udev systemd openssl chromium \
	libgl1 libegl1 libgles2 libgl1-mesa-dri libx11-6 libxext6 libxrender1 libxi6 \
	libxrandr2 libxcursor1 libxfixes3 libxss1 libxxf86vm1 libmtdev1

.PHONY: run test deps venv lint typecheck check-imports clean bench

run: venv
	KIOSK_DATA_DIR=$(DATA_DIR) $(BIN)/kiosk run --sim

# Test processes (pytest-xdist), each given whole files, those with long tests first
# (tests/conftest.py): three for every two cores, as a third of the suite's time goes in
# waiting (for brokers, processes it starts, timers), not computing. PYTEST_ARGS comes after
# and can override it: PYTEST_ARGS='-n 0' runs everything in one process.
TEST_PROCESSES ?= $(shell n=$$(nproc); echo $$(( n * 3 / 2 > 1 ? n * 3 / 2 : 1 )))
PYTEST_PARALLEL ?= -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

test: venv
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

deps:
	@scripts/install-debian-packages $(DEB_PACKAGES)

venv: $(STAMP)

$(STAMP): pyproject.toml | deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy .

check-imports: venv
	$(BIN)/lint-imports

bench: venv
	$(BIN)/python -m bench.lookup

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
