# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv

.PHONY: serve install test bench

serve: install
	$(VENV)/bin/corral bootstrap
	$(VENV)/bin/corral serve

install:
	$(PYTHON) deploy/install.py --venv $(VENV) --editable

test:
	$(PYTHON) deploy/install.py --venv $(VENV) --editable --with-tests
	$(VENV)/bin/python -m pytest -q

bench: install
	$(VENV)/bin/python bench/throughput.py
