# Two commands a newcomer needs: `make demo` (runtime only, no torch) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Machine-scope LSL discovery for everything started from here (tests, demo, benchmarks).
export LSLAPICFG ?= $(CURDIR)/deploy/lsl_api.cfg

.PHONY: demo test lint bench venv-runtime venv-dev browser

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)

venv-runtime: $(VENV)/bin/activate
	$(PIP) install -q -e .

# torch is pinned to the CPU wheel so that the test set-up never downloads CUDA packages. The peers
# extra (ezmsg, MNE-LSL: the benchmark's peer pipelines) installs in ~10 s and pulls no torch.
venv-dev: $(VENV)/bin/activate
	$(PIP) install -q "torch==2.13.0" -e ".[train,dev,eval,p2p,nwb,peers]"

# Debian's chromium for the dashboard's browser test (tests/test_dashboard_browser.py). Never fails:
# without apt-get or root the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1) || \
	   echo "no browser: the dashboard browser test will skip (apt-get install chromium failed or is not allowed here)")

demo: venv-runtime
	$(VENV)/bin/rtdecode demo --out demo-output

test: venv-dev browser
	$(PY) -m pytest -q

lint: venv-dev
	$(PY) -m ruff check .

bench: venv-runtime
	$(VENV)/bin/rtdecode bench
