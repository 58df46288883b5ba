# Two entry points (see README): `make sample` and `make test`. Both install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml infra/kafka/pom.xml | sha1sum | cut -c1-12)
SAMPLE ?= samples/greenhouse_sample.csv.gz

.PHONY: install sample test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml infra/kafka/pom.xml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/erastream broker provision
	rm -f $(VENV)/.installed-* && touch $@

sample: $(STAMP)
	$(BIN)/erastream run --input $(SAMPLE)

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) data
