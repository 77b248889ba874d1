# The CPU build of torch is pinned here so that installs stay small and fast;
# pyproject.toml keeps an open range so that users with a GPU install their own build.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHAKES := ../shared/corpora/tinyshakespeare

.PHONY: install demo test bench lint format clean gpu-data

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python corpora/make_demo_corpus.py corpora/demo.txt
	$(BIN)/seqtool train generator --train corpora/demo.txt --out runs/demo --force \
		--hidden-size 256 --batch-size 32 --seq-len 64 --max-time 90s --eval-every 500
	$(BIN)/seqtool generate runs/demo --prompt "The " --length 500 --temperature 0.6 --seed 1

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/run.py --out BENCHMARKS.md

lint: install
	$(BIN)/ruff check seqtool tests bench corpora
	$(BIN)/ruff format --check seqtool tests bench corpora

format: install
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
