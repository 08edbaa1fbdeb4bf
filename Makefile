# Two entry points for a fresh machine (see README):
#   make repro   set up, then `dvc repro` (quick profile; DATA=path: an offline CIFAR-10 copy)
#   make test    set up, then lint and run the tests
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?=

.PHONY: setup test lint repro ui clean

$(BIN)/transferability: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch/torchvision first, pinned: on the project's machines they install from local disk
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/transferability

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

repro: setup
ifneq ($(DATA),)
	sed -i 's|^  source: .*|  source: $(DATA)|' params.yaml
endif
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf data/prepared data/splits models results
