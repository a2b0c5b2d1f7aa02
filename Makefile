# One command for set-up + the main job, one for the tests (see README.md).
PY := .venv/bin/python

.PHONY: setup demo test

setup: .venv/.installed

.venv/.installed: requirements.txt pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: setup
	bash tools/demo.sh

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile
