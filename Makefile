# perfusion: every target is one line calling the `perfusion` command in .venv. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.DEFAULT_GOAL := help
.PHONY: help install demo test fit fit-cohort meta-train compare loocv train-seg sweep bench bench-accuracy gpu-check lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv (torch 2.13.0 CPU first, then the project); fast when done

INIT ?=
INIT_ARG = $(if $(INIT),init=$(INIT))

demo: install ## make the built-in phantom and fit ReSPPINN maps to it with the default recipe (data/demo/)
	$(BIN)/perfusion phantom out=data/demo/phantom n=1 seed=0 && $(BIN)/perfusion fit data/demo/phantom/patient-000 out=data/demo/fit $(INIT_ARG) $(ARGS)

test: install ## run the test suite (no GPU, no network)
	$(BIN)/python -m pytest -q $(ARGS)

fit: install ## fit maps to a case: make fit CASE=path [OUT=dir, default CASE/fits/<method>] ARGS="key=value ..." (INIT=ckpt to start from one)
	$(BIN)/perfusion fit $(or $(CASE),data/demo/phantom/patient-000) $(if $(OUT),out=$(OUT)) $(INIT_ARG) $(ARGS)

fit-cohort: install ## fit every case of a folder (resumes) and write cohort.csv: make fit-cohort COHORT=dir OUT=dir
	$(BIN)/perfusion fit-cohort $(or $(COHORT),data/cohort) out=$(or $(OUT),data/cohort-fits) $(ARGS)

meta-train: install ## Reptile meta-training (CPU default; ARGS="config=meta/paper" for paper scale); resumes
	$(BIN)/perfusion meta-train $(ARGS)

compare: install ## meta-init vs no-init (steps and the default stopping rule) vs random-init vs population prior vs SPPINN, six held-out conditions
	$(BIN)/perfusion compare $(ARGS)

loocv: install ## leave-one-out U-Net cross-validation on the phantom cohort; resumes finished folds
	$(BIN)/perfusion loocv $(ARGS)

train-seg: install ## train the final infarct-core U-Net on a whole cohort
	$(BIN)/perfusion train-seg $(ARGS)

sweep: install ## run the hash-encoding sweep offline: make sweep ARGS="count=8"
	$(BIN)/perfusion sweep $(or $(SWEEP),configs/sweeps/hash_encoding.yaml) $(ARGS)

BENCHES := auto-aif white exponential heldout-white smoothing speed grid64 grid256 thick motion

bench-accuracy: install ## every method against phantom truth (ARGS=run_recipes=true adds the candidate recipes) -> bench/results/accuracy/
	$(BIN)/perfusion bench $(ARGS)

bench: bench-accuracy ## every benchmark -> bench/results/<name>/ (configs/bench.yaml, configs/bench/*.yaml)
	for name in $(BENCHES); do $(BIN)/perfusion bench config=bench/$$name $(ARGS) || exit 1; done
	$(BIN)/python bench/other_side_hypo.py && $(BIN)/python bench/core_outside.py \
		&& $(BIN)/python bench/healthy_cbf.py
	$(BIN)/python bench/robustness.py

gpu-check: install ## tcnn parity tests, torch vs tcnn fit step, a whole fit on CUDA; CPU dry run without a GPU
	$(BIN)/python bench/gpu_check.py --record $(ARGS)

lint: install ## ruff
	$(BIN)/ruff check perfusion experiments bench tests && $(BIN)/ruff format --check perfusion experiments bench tests

clean: ## remove generated data and runs (keeps .venv and checkpoints)
	rm -rf data/demo wandb .pytest_cache
