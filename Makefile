# The two quick-start commands are `make example` and `make test`; CI runs `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# constraints.txt keeps torch on the 2.13.0 CPU build; deepspeed's setup imports torch, so it builds
# without isolation against the torch installed first.
PIP_INSTALL := $(PIP) install -q -c constraints.txt
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export DS_ACCELERATOR ?= cpu

.PHONY: install install-core example test

install-core:
	$(PIP_INSTALL) -e .

install:
	$(PIP_INSTALL) torch==2.13.0 setuptools wheel
	$(PIP_INSTALL) --no-build-isolation -e ".[train,test]"

example: install
	$(PYTHON) examples/make_tiny_model.py
	$(PYTHON) -m qcompile run examples/zero2-cpu.yaml --force

test: install
	$(PYTHON) -m pytest -q
