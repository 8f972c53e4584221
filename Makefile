# Everything the project needs is installed from here: CI and new machines start bare.
# GPU users: make TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_MODELS ?= demo-models
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-numerics test-annotators demo serve lint bench bench-realsize clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# Optional: gifsicle for the GIF optimisation setting, unpacked into the venv (no root needed).
	# Where Debian's apt is not available this is skipped; the setting then warns instead.
	-cd $(VENV) && apt-get download gifsicle >/dev/null 2>&1 && dpkg -x gifsicle_*.deb gifsicle-deb \
	    && ln -sf ../gifsicle-deb/usr/bin/gifsicle bin/gifsicle; rm -f $(VENV)/gifsicle_*.deb
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev,server,postgres,ray]'
	# open-clip-torch only carries the CLIP BPE vocabulary we build the tokenizer from; its
	# dependencies (torchvision, timm) are not needed and would pull a CUDA torch here. Installed
	# last and without pip's dependency check, which would otherwise report them as missing.
	$(BIN)/pip install --quiet --no-deps --no-warn-conflicts 'open-clip-torch>=2.20'
	# The annotators extra (model-based ControlNet preprocessors) without torchvision and timm, for
	# the same reason: PyPI's torchvision is a CUDA build that does not load beside the CPU torch
	# (and, installed, breaks transformers' image processors). depth_midas and
	# openpose_full need it and say so; the others run. With a CUDA torch: install the matching
	# torchvision from $(TORCH)'s index, then pip install -e '.[annotators]'.
	$(BIN)/pip install --quiet 'einops>=0.7' 'scipy>=1.11' 'scikit-image>=0.22'
	$(BIN)/pip install --quiet --no-deps --no-warn-conflicts 'controlnet-aux==0.0.10'
	# Browser tests of the web UI drive Debian's chromium (never `playwright install`). Best effort:
	# without apt or root this is skipped, and those tests say why they are skipped.
	-command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1
	# PostgreSQL for the shared-queue tests (they start a throwaway server as a non-root user, and
	# are skipped where it is missing). Best effort, as above.
	-ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	    (apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql) >/dev/null 2>&1
	touch $@

install: $(STAMP)

# Tests run one thread each, TEST_WORKERS of them at once (pytest-xdist; each worker takes the next
# test when it is free, so the long demo and server tests do not queue behind each other).
# TEST_WORKERS=0 runs them one after another in this process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(PYTEST)

# The numerics-sensitive tests again with PyTorch's portable CPU kernels: other CPUs pick other
# kernels (AVX-512, AVX2, default), and an equivalence that holds on one must hold on all.
test-numerics: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(PYTEST) -m numerics

# depth_midas and openpose_full need torchvision (and timm), which cannot sit beside the CPU torch
# above (PyPI's torchvision is built for PyPI's CUDA torch). They are tested in a venv of their
# own, with a torch and the torchvision built for it (on x86_64 PyPI's CUDA build, about 6 GB,
# which runs on the CPU too). Best effort: where that install fails, this says so and stops; a
# failing test fails.
TV_VENV ?= .venv-torchvision
TV_TORCH ?= torch==2.14.1 torchvision==0.29.1
TV_STAMP := $(TV_VENV)/.installed

$(TV_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(TV_VENV)
	$(TV_VENV)/bin/pip install --quiet $(TV_TORCH) 'timm>=0.9' \
	    && $(TV_VENV)/bin/pip install --quiet -e '.[dev,server,annotators]' \
	    && $(TV_VENV)/bin/pip install --quiet --no-deps 'open-clip-torch>=2.20' && touch $@ \
	    || echo "test-annotators: could not install $(TV_TORCH) with timm into $(TV_VENV); skipped"

test-annotators:
	-@$(MAKE) --no-print-directory $(TV_STAMP)
	@if [ -f $(TV_STAMP) ]; then \
	    $(TV_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/control/test_control_annotators.py; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# The trained demo model shipped in the package (src/animdiff/demo/weights), then a folder of tiny
# random models in the real layouts (every option of the README runs on them; they draw noise).
demo: $(STAMP)
	$(BIN)/animdiff generate --demo "a red ball moving right" --seed 0 \
	    --format gif,png,txt --out outputs/demo
	$(BIN)/animdiff generate --demo --prompt-file examples/demo-travel.txt --seed 0 \
	    --format gif,txt --out outputs/demo
	$(BIN)/python -m animdiff.testing $(DEMO_MODELS)

serve: $(STAMP)
	$(BIN)/python -m animdiff.testing $(DEMO_MODELS)
	$(BIN)/animdiff serve --models-dir $(DEMO_MODELS) --data-dir animdiff-data

# Benchmarks print tables and ratios against a peer measured in the same run; they assert nothing.
bench: $(STAMP)
	for b in bench/[a-z]*.py; do case $$b in *realsize*|*cuda*) ;; *) $(BIN)/python $$b || exit 1;; esac; done

# Real-size SD1.5 + motion module v2 with random weights: writes 3.7 GB under bench/.realsize
# (reused), peaks near 8 GB; several minutes on a CPU. Real-size SDXL base + AnimateDiff-XL:
# writes 7.9 GB more there and needs about 20 GB of memory on a CPU (float32).
bench-realsize: $(STAMP)
	$(BIN)/python bench/realsize_vs_diffusers.py --threads 1 --no-peer-load
	$(BIN)/python bench/context_memory.py --real-size --threads 1
	$(BIN)/python bench/fp8_weights.py --real-size --threads 1
	$(BIN)/python bench/realsize_sdxl_vs_diffusers.py --threads 1

clean:
	rm -rf $(VENV) $(DEMO_MODELS) outputs animdiff-data .pytest_cache .ruff_cache
