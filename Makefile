# Two entry points: `make run` (embedded service, no external servers) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
export ATELIER_DATA_DIR ?= $(CURDIR)/var

.PHONY: run test install bench clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

# Embedded mode: migrate the SQLite database, start the web app on ATELIER_PORT (8000) and one worker.
# Without ImageNet VGG-19 weights on disk (no download here), runs on seeded random weights and says so.
run: install
	@weights="$${ATELIER_VGG19_WEIGHTS-$$($(PY) -c 'from core.engines.vgg import weights_status; print("" if weights_status("")[0] else "random")')}"; \
	if [ "$$weights" = random ] && [ -z "$${ATELIER_VGG19_WEIGHTS+x}" ]; then \
	  echo "atelier: ImageNet VGG-19 weights not found; using seeded random weights (results are not artistic). See README: 'VGG-19 weights'."; \
	fi; \
	ATELIER_VGG19_WEIGHTS="$$weights" exec $(PY) -m atelier up

# Starts PostgreSQL and Redis when they are down and installs Debian's chromium when it is missing (see
# scripts/test-prereqs.sh), then runs the whole suite and prints its 15 slowest tests.
test: install
	@scripts/test-prereqs.sh
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

bench: install
	$(PY) bench/style_transfer.py
	$(PY) bench/gan.py
	$(PY) bench/queue_bench.py
	$(PY) bench/streams.py
	$(PY) bench/demo_job.py

clean:
	rm -rf var .pytest_cache
