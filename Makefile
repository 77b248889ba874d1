# pyproject.toml keeps an open torch range so that users with a GPU install their own
# build. Here torch is pinned, and its CPU build (about 200 MB, where PyPI's Linux build
# brings several GB of CUDA libraries) comes from PyTorch's index: on a GPU machine run
# `make TORCH_INDEX= ...` to take PyPI's build instead. The index is an extra one, so a
# machine that cannot reach it (a local wheel cache, a mirror) still installs, and with
# one retry instead of pip's five it does not wait half a minute per package for it.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
TORCH_STAMP := $(VENV)/.torch
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-dev demo test bench lint format clean gpu-data

# install: what the commands need (make demo); install-dev: the test and lint tools too
install: $(STAMP)
install-dev: $(DEV_STAMP)

$(TORCH_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION) \
		$(if $(TORCH_INDEX),--retries 1 --extra-index-url $(TORCH_INDEX))
	touch $(TORCH_STAMP)

$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/pip install -q -e .
	touch $(STAMP)

$(DEV_STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

demo: install
	$(BIN)/python corpora/make_demo_corpus.py corpora/demo.txt
	$(BIN)/seqtool train generator --train corpora/demo.txt --out runs/demo --force \
		--hidden-size 256 --batch-size 32 --seq-len 64 --max-time 90s --eval-every 500
	$(BIN)/seqtool generate runs/demo --prompt "The " --length 500 --temperature 0.6 --seed 1

test: install-dev
	$(BIN)/python -m pytest

bench: install-dev
	$(BIN)/python bench/run.py --out BENCHMARKS.md

lint: install-dev
	$(BIN)/ruff check seqtool tests bench corpora
	$(BIN)/ruff format --check seqtool tests bench corpora

format: install-dev
	$(BIN)/ruff format seqtool tests bench corpora
	$(BIN)/ruff check --fix seqtool tests bench corpora

# bench/gpu.sh runs on a lent GPU machine that receives the checkout only: copy the
# shared corpora and reference scripts in (ignored by git through .git/info/exclude)
gpu-data:
	mkdir -p gpu-data/corpora gpu-data/bench
	cp -r ../shared/corpora/tinyshakespeare ../shared/corpora/multi30k gpu-data/corpora/
	cp ../shared/bench/ref_*.py gpu-data/bench/
	grep -qx 'gpu-data/' .git/info/exclude 2>/dev/null || echo 'gpu-data/' >> .git/info/exclude

clean:
	rm -rf $(VENV) runs .pytest_cache
