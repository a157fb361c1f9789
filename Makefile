# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv if needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test notebooks lint clean

# Python 3.12+ venvs come without setuptools, which the editable install needs: installed first.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77"
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Sample sprites from the shipped weights: a PNG grid and a denoising GIF in outputs/demo/.
demo: $(STAMP)
	$(PY) -m diffusion_utilities demo --out outputs/demo

# The whole suite: unit tests, then every notebook re-run by nbval.
test: $(STAMP)
	$(PY) -m pytest -q --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg tests notebooks

# Re-execute the notebooks in place so what GitHub shows is what a learner sees.
notebooks: $(STAMP)
	$(PY) tools/run_notebooks.py notebooks/*.ipynb

clean:
	rm -rf $(VENV) outputs build
