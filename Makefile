# Two entry points (see README): `make sample` and `make test`. Both install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml infra/kafka/pom.xml infra/install-system-deps.sh | sha1sum | cut -c1-12)
SAMPLE ?= samples/greenhouse_sample.csv.gz

.PHONY: install sample test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml infra/kafka/pom.xml infra/install-system-deps.sh
	infra/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/erastream broker provision
	$(BIN)/python -m stages.feature_engine.warm
	rm -f $(VENV)/.installed-* && touch $@

sample: $(STAMP)
	$(BIN)/erastream run --input $(SAMPLE)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py --feature-set efficient --tsfresh-workers 1,2
	$(BIN)/python bench/features.py --sizes 1000,10000 --sets minimal,efficient --n-jobs 2 --no-per-calc

clean:
	rm -rf $(VENV) data
