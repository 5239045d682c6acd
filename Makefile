# The two commands a new user needs: `make demo` and `make test`.
# Both create or reuse .venv and install what they need. torch==2.13.0 is installed first:
# on these machines it comes from a local CPU wheel, and installing it before the project keeps
# any dependency range from pulling a newer CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Everything that goes into the wheel: reinstall when any of it changes.
SOURCES := pyproject.toml $(shell find src theory reference validation -name '*.py' -o -name 'py.typed' 2>/dev/null)

.PHONY: demo test lint notebooks clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet torch==2.13.0
	touch $@

# CI tests an installed build, not the source tree: a regular (non-editable) install.
$(VENV)/.installed: $(VENV)/.torch $(SOURCES)
	$(PIP) install --quiet ".[test,notebooks,validation]"
	$(PIP) install --quiet --no-deps "k-diffusion==0.1.1.post1"
	$(PIP) install --quiet --no-deps --force-reinstall .
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/diffusion-oracle verify --out demo-output

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	cd tests && HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} ../$(PY) -m pytest -q -n 2 -p no:cacheprovider --rootdir=.. -c ../pyproject.toml .

# Re-execute the notebooks in place (stored outputs); the tests execute them without writing.
notebooks: $(VENV)/.installed
	$(PY) tools/run_notebooks.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo-output
