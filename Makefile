# Two entry points for a fresh machine (see README):
#   make repro   set up, then run the pipeline: the reference profile (params.yaml) with
#                `dvc repro`; PROFILE=quick|paper (profiles.yaml), or any profile with DATA or
#                EXTRA, with `dvc exp run --temp`, which leaves the workspace, params.yaml and the
#                committed results alone. DATA=path: an offline CIFAR-10 copy;
#                EXTRA="-S key=value ...": more overrides.
#   make test    set up, then lint and run the tests
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?=
PROFILE ?= reference
EXTRA   ?=
NAME    ?= $(PROFILE)
PROFILE_ARGS = $(shell $(if $(wildcard $(BIN)/transferability),$(BIN)/)transferability profile $(PROFILE))
# quoted for the shell and for DVC's (Hydra's) parser: a path may hold spaces or commas
DATA_ARG = $(if $(DATA),-S "data.source='$$(realpath -ms -- '$(DATA)')'")
EXP_RUN = dvc exp run --temp --name $(NAME) $(PROFILE_ARGS) $(DATA_ARG) $(EXTRA)
# the reference profile with its own data source runs `dvc repro`; with DATA (or EXTRA) it runs
# as an experiment too, so that no tracked file (params.yaml) is rewritten
# a study with a pipeline of its own (pipelines/<name>/dvc.yaml: whole) runs it with `dvc repro`
STUDY_PIPELINE = $(wildcard pipelines/$(PROFILE)/dvc.yaml)
DVC_REPRO = $(if $(STUDY_PIPELINE),dvc repro $(STUDY_PIPELINE),$(if $(filter reference,$(PROFILE)),$(if $(DATA)$(EXTRA),$(EXP_RUN),dvc repro),$(EXP_RUN)))

TEX_PACKAGES := latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra \
                texlive-fonts-recommended lmodern

.PHONY: setup tex test lint repro repro-in-container report ui clean

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
	$(BIN)/python -m pytest -q -n auto --durations=15

repro: setup tex
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/$(DVC_REPRO)

# the report PDF of the committed results (report/build/paper.pdf), without training anything
report: setup tex
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python pipelines/report.py results

# inside docker/Dockerfile's image, where everything is installed already
repro-in-container:
	$(DVC_REPRO)

ui: setup  # MLflow's UI on 127.0.0.1:5000, opened on the study's runs table
	$(BIN)/transferability ui

clean:
	rm -rf data/prepared data/splits models results
