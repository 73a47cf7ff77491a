# clv-service — read top to bottom: `make run` to try it, `make test` to check it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON  ?= python3
UV_VERSION := 0.13.9
# Use uv from PATH when present, else bootstrap a pinned copy into .tools/ (needs only PyPI).
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
CLV := $(VENV)/bin/clv
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_CUSTOMERS ?= 2000

.PHONY: help run test lint sync sync-dev postgres browser bench bench-ingest bench-accuracy bench-inference bench-scoring bench-overhead bench-workers bench-scale bench-dask bench-soak bench-backtest model-default container-test bench-alerts clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

sync: $(if $(findstring .tools,$(UV)),.tools/bin/uv)  ## install the locked runtime dependencies into .venv
	$(UV) sync --frozen --no-dev --inexact --extra train --extra dask

sync-dev: $(if $(findstring .tools,$(UV)),.tools/bin/uv)  ## install runtime + dev + bench dependencies
	$(UV) sync --frozen --extra bench --extra train --extra dask

run: sync  ## migrate the embedded SQLite database, load demo data once, make a local API key, serve on :8000
	$(CLV) migrate
	$(CLV) generate-demo --customers $(DEMO_CUSTOMERS) --if-empty
	@KEY=$$($(CLV) keys ensure-local --file var/local-api-key); \
	  CUSTOMER=$$(sqlite3 var/clv.db "select external_id from customers where id = (select customer_id from events where type = 'order' limit 1)" 2>/dev/null || echo demo-s7-c0000001); \
	  echo ""; \
	  echo "API on http://$(HOST):$(PORT)   OpenAPI page: http://$(HOST):$(PORT)/docs (Authorize with the key)"; \
	  echo "Local API key (all scopes, kept in var/local-api-key): $$KEY"; \
	  echo ""; \
	  echo "In another terminal:"; \
	  echo "  export CLV=http://$(HOST):$(PORT) KEY=$$KEY"; \
	  echo "  curl -s -H \"Authorization: Bearer \$$KEY\" \"\$$CLV/v1/customers/$$CUSTOMER/prediction?explain=true\""; \
	  echo "then follow the walkthrough in README.md (a new customer, an order, a refund, predictions, erasure)."; \
	  echo ""
	$(CLV) serve --host $(HOST) --port $(PORT)

postgres:  ## make sure the local Postgres answers on 127.0.0.1:5432 (start it if it is down)
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  echo "starting PostgreSQL"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; }
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	  echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1

lint: sync-dev  ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check app tests bench migrations
	$(VENV)/bin/ruff format --check app tests bench migrations
	$(VENV)/bin/mypy

browser:  ## headless Chromium for the /docs rendering test (Debian's package; installed as root when missing)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	  else echo "tests/test_docs_page.py needs Chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

test: sync-dev postgres browser lint  ## lint, then the whole suite against a real Postgres
	$(VENV)/bin/pytest

container-test: sync-dev postgres  ## build the images (podman/docker, set up if missing) and check them end to end
	mkdir -p var
	.ci/container-test.sh

bench: bench-ingest bench-accuracy bench-inference bench-scoring  ## the standard benchmarks (figures go to BENCHMARKS.md)

bench-ingest: sync-dev postgres  ## bulk import and HTTP ingestion throughput
	$(VENV)/bin/python -m bench.ingest

bench-accuracy: sync-dev postgres  ## CDNOW protocol A vs BG/NBD + Gamma-Gamma, through the real commands
	$(VENV)/bin/python -m bench.cdnow_accuracy

bench-inference: sync-dev postgres  ## ONNX vs native XGBoost latency
	$(VENV)/bin/python -m bench.inference

bench-scoring: sync-dev postgres  ## a real worker under load: predictions, batch, ingest+score, clv score
	$(VENV)/bin/python -m bench.scoring

bench-overhead: sync-dev postgres  ## CPU per single prediction vs /healthz, this code against a baseline revision (BASELINE=rev)
	$(VENV)/bin/python -m bench.prediction_overhead $(if $(BASELINE),--baseline $(BASELINE))

bench-workers: sync-dev postgres  ## clv serve --workers 2 vs one worker under wrk, with the CPU of workers, Postgres and load generator
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q wrk || { apt-get update -q && apt-get install -y -q wrk; }; \
	  else echo "bench-workers needs wrk: sudo apt-get install wrk" >&2; exit 1; fi; }
	$(VENV)/bin/python -m bench.workers

bench-scale: sync-dev postgres  ## offline features for 1M customers / 20M events (~10 min)
	$(VENV)/bin/python -m bench.features_scale

bench-dask: sync-dev postgres  ## clv train/score at 1M customers: single node vs Dask (local, and a scheduler on 127.0.0.1) (~40 min)
	$(VENV)/bin/python -m bench.dask_scale

bench-soak: sync-dev postgres  ## 5-minute steady mix of ingest and scoring: errors, latency and memory over time
	$(VENV)/bin/python -m bench.soak

bench-backtest: sync-dev postgres  ## out-of-time backtests on CDNOW and Online Retail vs BG/NBD + Gamma-Gamma (~15 min)
	$(VENV)/bin/python -m bench.backtest

model-default: sync-dev  ## retrain the shipped default model (synthetic demo shop, fixed seed) into models/
	$(VENV)/bin/python -m app.training.shipped

bench-alerts: sync-dev postgres  ## webhook delivery throughput, score=true p99 beside the deliverer, clv rescore at 100k customers
	$(VENV)/bin/python -m bench.alerts

clean:  ## remove the virtualenv, tools and the embedded database
	rm -rf $(VENV) .tools var .pytest_cache .mypy_cache .ruff_cache
