# modelfn: `make demo` and `make test` work on a fresh machine; each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ONCE   ?=
PORT   ?= 8080
PYTEST_ARGS ?=
PEERS  ?=

.PHONY: demo test lint bench install clean system

$(STAMP): pyproject.toml layers/modelfn/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# checkov (tests/infra/test_security.py) gets a venv of its own: it pins boto3, packaging and networkx to versions
# the dev environment must not be downgraded to.
CHECKOV := $(VENV)/checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet "checkov==3.3.30"

# System programs the tests start for real (a Redis server, Chromium): each scripts/install-*.sh is idempotent.
system:
	@for script in scripts/install-*.sh; do bash $$script || exit 1; done

install: $(STAMP) $(CHECKOV) system

demo: $(STAMP)
	$(VENV)/bin/modelfn dev --port $(PORT) $(if $(ONCE),--once,)

test: $(STAMP) $(CHECKOV) system
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/cfn-lint template.yaml infra/model-function.yaml infra/sagemaker/endpoint.yaml

# PEERS=1: the server figure also installs KServe, MLServer and BentoML (pinned, each in bench/.peers/NAME) and
# measures them beside modelfn serve; without it nothing is installed for them.
bench: $(STAMP)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	@command -v wrk >/dev/null || echo "bench: wrk not found (apt-get install wrk): the server figures use the slower Python load generator"
	$(if $(PEERS),$(PY) -m bench.peers install,)
	BENCH_PEERS=$(PEERS) $(PY) -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info layers/modelfn/*.egg-info
