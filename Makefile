# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv

.PHONY: serve install test test-cluster bench bench-frontend bench-pull bench-speculation bench-gpu install-service

serve: install
	$(VENV)/bin/corral bootstrap
	$(VENV)/bin/corral serve

install:
	$(PYTHON) deploy/install.py --venv $(VENV) --editable

test:
	$(PYTHON) deploy/install.py --venv $(VENV) --editable --with-tests
	$(VENV)/bin/python -m pytest -q

# corral on a local two-node Ray cluster (tests/cluster; docs/cluster.md): adds the ray extra.
test-cluster:
	$(PYTHON) deploy/install.py --venv $(VENV) --editable --with-tests
	$(VENV)/bin/python -m pip install --quiet -e '.[ray]'
	$(VENV)/bin/python -m pytest -q -m cluster tests/cluster

bench: install
	$(VENV)/bin/python bench/throughput.py --llama-server

# The front end's own costs: /api/tags requests/s with 20 models, idle RSS, cold load vs raw.
bench-frontend: install
	$(VENV)/bin/python bench/frontend.py

# Pull speed against curl from a loopback docker-registry (needs docker-registry and curl).
bench-pull: install
	$(VENV)/bin/python bench/pull.py

bench-speculation: install
	$(VENV)/bin/python bench/speculation.py

bench-gpu:
	bench/gpu.sh

# The systemd service (run as root): corral in /opt/corral, a `corral` user, the unit and its
# environment file (kept if already there), then enabled and started.
install-service:
	$(PYTHON) deploy/install.py --venv /opt/corral
	id -u corral >/dev/null 2>&1 || useradd --system --home-dir /var/lib/corral --shell /usr/sbin/nologin corral
	test -e /etc/corral/corral.env || install -D -m 644 deploy/corral.env /etc/corral/corral.env
	install -m 644 deploy/corral.service /etc/systemd/system/corral.service
	systemctl daemon-reload
	systemctl enable --now corral
