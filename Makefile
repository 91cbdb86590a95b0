# vmamba-zoo: two commands for a fresh machine (each does its own setup, idempotently).
#   make demo   the main job, offline, on embedded defaults
#   make test   the whole test suite
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1
# this checkout's packages first (see tools/setup_env.sh)
export PYTHONPATH := $(CURDIR)/.paths$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup demo test clean-venv-link

setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) -m vmamba_zoo.cli demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

clean-venv-link:
	rm -f .venv
