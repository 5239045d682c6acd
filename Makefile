# The two commands a new user needs: `make demo` and `make test`.
# Both create or reuse .venv and install what they need. torch==2.13.0 is installed first:
# on these machines it comes from a local CPU wheel, and installing it before the project keeps
# any dependency range from pulling a newer CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Everything that goes into the wheel: reinstall when any of it changes.
SOURCES := pyproject.toml $(shell find src theory reference validation -name '*.py' -o -name 'py.typed' -o -name '*.json' 2>/dev/null)

.PHONY: demo test test-kernels test-drift fuzz lint notebooks clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet torch==2.13.0
	touch $@

# CI tests an installed build, not the source tree: a regular (non-editable) install.
$(VENV)/.installed: $(VENV)/.torch $(SOURCES)
	$(PIP) install --quiet ".[test,notebooks,validation]"
	$(PIP) install --quiet --no-deps "k-diffusion==0.1.1.post1" "flow_matching==1.0.10" "torchcfm==1.0.7"
	$(PIP) install --quiet --no-deps --force-reinstall .
	touch $@

# The Triton kernels (accelerated/_fused.py) run by Triton's interpreter on the CPU, so their
# logic is tested on machines without a GPU too: an environment of its own, because Triton
# 3.6's interpreter needs NumPy < 2.4 (tests/test_fused_interpreter.py).
KVENV := .venv-kernels
KPY   := $(KVENV)/bin/python

$(KVENV)/.torch:
	$(PYTHON) -m venv $(KVENV)
	$(KPY) -m pip install --quiet torch==2.13.0
	touch $@

$(KVENV)/.installed: $(KVENV)/.torch $(SOURCES)
	$(KPY) -m pip install --quiet "triton==3.6.0" "numpy<2.4" ".[test]"
	$(KPY) -m pip install --quiet --no-deps --force-reinstall .
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/diffusion-oracle verify --out demo-output

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test-kernels: $(KVENV)/.installed
	cd tests && TRITON_INTERPRET=1 ../$(KPY) -m pytest -q -p no:cacheprovider -W "ignore:::triton.runtime.interpreter" --rootdir=.. -c ../pyproject.toml test_fused_interpreter.py

test: lint test-kernels
	cd tests && HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} ../$(PY) -m pytest -q -n 2 -p no:cacheprovider --rootdir=.. -c ../pyproject.toml -m "not drift" .

# The fuzz suite of the public API (tests/test_fuzz_*.py) with many more examples than `make test`
# runs (HYPOTHESIS_PROFILE=nightly: 250 examples per (callable, argument), random seeds); one
# BLAS thread per process, as oversubscribed threads slow the small linear algebra tenfold.
FUZZ := test_fuzz_targets.py test_fuzz_samplers.py test_fuzz_verify.py test_fuzz_schedules.py \
        test_fuzz_forward.py test_fuzz_elbo_stats.py
fuzz: $(VENV)/.installed
	cd tests && OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 HYPOTHESIS_PROFILE=nightly ../$(PY) -m pytest -q -p no:cacheprovider --rootdir=.. -c ../pyproject.toml $(FUZZ)

# the driver against older diffusers releases (installs them from the package index)
test-drift: $(VENV)/.installed
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider --rootdir=.. -c ../pyproject.toml -m drift test_version_drift.py

# Re-execute the notebooks in place (stored outputs); the tests execute them without writing.
notebooks: $(VENV)/.installed
	$(PY) tools/run_notebooks.py

clean:
	rm -rf $(VENV) $(KVENV) build dist *.egg-info demo-output
