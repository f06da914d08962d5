# The two commands of README.rst:
#   make demo   set up, start a local Glance, show the main job
#   make test   set up, lint, type-check and run every test against the
#               real servers (Glance, cinder-api; qemu-img)
# Server virtualenvs are built once and cached (see
# volume_image/testing/launcher.py); the project's own venv is .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup servers demo test lint unit functional sample-config clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

setup: $(BIN)/.installed

servers: setup
	$(BIN)/python -m volume_image.testing.launcher setup

demo: servers
	$(BIN)/python -m volume_image.testing.demo

lint: setup
	$(BIN)/ruff check volume_image tests bench
	$(BIN)/ruff format --check volume_image tests bench
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest tests/unit

functional: servers
	$(BIN)/python -m pytest tests/functional

test: servers lint
	$(BIN)/python -m pytest

sample-config: setup
	$(BIN)/python -m oslo_config.generator --namespace volume_image \
		--output-file doc/source/_static/volume_image.conf.sample

clean:
	rm -rf $(VENV) build *.egg-info
