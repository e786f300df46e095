# Two entry points on a fresh machine: `make demo` runs the pipeline on the embedded stack, `make test` runs the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
UV_VERSION := 0.13.10
# Where Maven cannot fetch the catalog server's jars, a pre-built jar folder beside the checkout stands in for it.
export GOVERNED_FT_JAR_MIRROR ?= $(wildcard $(abspath ../shared/jars))

.PHONY: setup system browser demo ui test stack-down clean

setup: system $(STAMP)

system:
	@command -v javac >/dev/null && command -v mvn >/dev/null || { \
	  echo "installing Java 17 (JDK) and Maven"; apt-get update -qq && apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null; }

# The UI test reads the Dagster UI as a person sees it, in a real headless browser.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "installing Chromium for the UI test"; apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# uv installs the pinned packages (torch's CUDA wheels among them) in parallel, a minute faster than pip. Unlike pip
# it writes no bytecode unless asked: where PYTHONDONTWRITEBYTECODE is set, every process would compile torch,
# transformers, Dagster and MLflow from source again at each start.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python --upgrade pip setuptools wheel
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: setup
	$(BIN)/governed-ft stack up
	$(BIN)/governed-ft bootstrap
	$(BIN)/governed-ft run

ui: setup
	$(BIN)/governed-ft ui

test: setup browser
	bash .ci/pytest.sh

stack-down:
	$(BIN)/governed-ft stack down

clean: stack-down
	rm -rf .governed_ft
