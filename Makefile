# Two entry points for a fresh machine (see README):
#   make repro   set up, then `dvc repro` (quick profile; DATA=path: an offline CIFAR-10 copy;
#                PROFILE=paper: the paper-scale profile, for a GPU)
#   make test    set up, then lint and run the tests
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?=
PROFILE ?= quick
# The paper-scale profile, for a GPU: full task data, 20 epochs, 4 random splits and the
# dissimilar split, both directions, every treatment (applied with dvc exp run -S); 8 networks
# train at a time in separate processes, sharing the GPU (not yet timed on one).
PAPER   := -S data.train_per_class=null -S train.epochs=20 -S model.dropout=0.5 \
           -S 'split.random_seeds=[0,1,2,3]' -S split.dissimilar=true -S study.workers=8
DVC_REPRO = $(if $(filter paper,$(PROFILE)),dvc exp run $(PAPER),dvc repro)

TEX_PACKAGES := latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra \
                texlive-fonts-recommended lmodern

.PHONY: setup tex test lint repro repro-in-container ui clean

$(BIN)/transferability: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch/torchvision first, pinned: on the project's machines they install from local disk
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/transferability

# TeX for the report, from Debian's packages (about 100 MB), unless latexmk is already there
tex:
	@command -v latexmk >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  $$SUDO apt-get install -y -q --no-install-recommends $(TEX_PACKAGES); }

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint tex
	$(BIN)/python -m pytest -q

repro: setup tex
ifneq ($(DATA),)
	sed -i 's|^  source: .*|  source: $(DATA)|' params.yaml
endif
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/$(DVC_REPRO)

# inside docker/Dockerfile's image, where everything is installed already
repro-in-container:
	$(DVC_REPRO)

ui: setup
	@echo "open http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf data/prepared data/splits models results
