# The two commands of README.rst:
#   make demo   set up, start Keystone, RabbitMQ, Glance and Cinder,
#               show the main job (harness/demo.py)
#   make test   set up, lint, type-check, build the docs (sphinx-build -W)
#               and run every test against the real servers (Glance,
#               cinder-api; qemu-img)
# Server virtualenvs are built once and cached (see
# harness/launcher.py); the project's own venv is .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup servers demo test lint docs unit functional sample-config clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

setup: $(BIN)/.installed

servers: setup
	$(BIN)/python -m harness.launcher setup

demo: servers
	$(BIN)/python -m harness.demo

lint: setup
	$(BIN)/ruff check volume_image harness tests bench doc
	$(BIN)/ruff format --check volume_image harness tests bench doc
	$(BIN)/mypy

# -W: a warning (broken reference, bad markup) fails the build
docs: setup
	$(BIN)/sphinx-build -W --keep-going -q -b html doc/source doc/build/html

unit: setup
	$(BIN)/python -m pytest tests/unit

functional: servers
	$(BIN)/python -m pytest tests/functional

test: servers lint docs
	$(BIN)/python -m pytest

sample-config: setup
	$(BIN)/python -m oslo_config.generator --namespace volume_image \
		--output-file doc/source/_static/volume_image.conf.sample

clean:
	rm -rf $(VENV) build doc/build *.egg-info
