# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv if needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-fast notebooks lint clean

# What the course needs (requirements.txt). Python 3.12+ venvs come without setuptools, which the
# editable install needs: installed first.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77"
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Plus the test tools (pytest, nbval, hypothesis, playwright), only for the targets that use them.
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

# Sample sprites from the shipped weights: a PNG grid and a denoising GIF in outputs/demo/ (make demo again
# replaces them: that folder is this target's own).
demo: $(STAMP)
	$(PY) -m diffusion_utilities demo --out outputs/demo --overwrite

# The whole suite: unit tests, then every notebook re-run by nbval.
test: $(DEV_STAMP)
	$(PY) -m pytest -q --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg tests notebooks

# The edit-test loop: the unit tests but those marked slow (end-to-end training runs, the browser,
# the device script's dry run) and no notebooks; a few minutes on a 2-core CPU. `make test` runs all.
test-fast: $(DEV_STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# Re-execute the notebooks in place so what GitHub shows is what a learner sees.
notebooks: $(DEV_STAMP)
	$(PY) tools/run_notebooks.py notebooks/*.ipynb

clean:
	rm -rf $(VENV) outputs build
