# make demo / make test: create .venv if needed, install certopt pinned by
# constraints.txt, then run the demo or the test suite.
# make check-portable: the suite under generic numeric kernels, 1 and 2 threads.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

# One BLAS/torch thread unless the caller says otherwise (make test OMP_NUM_THREADS=2):
# the test problems are small, and on a loaded machine extra threads only wait.
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS

.PHONY: demo test check-portable lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/certopt demo

test: $(STAMP)
	$(BIN)/python -m pytest

check-portable: $(STAMP)
	PYTHON=$(BIN)/python .ci/check-portable

lint: $(STAMP)
	$(BIN)/ruff check certopt tests examples benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
