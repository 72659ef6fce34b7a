# make demo / make test: create .venv if needed, install certopt pinned by
# constraints.txt, then run the demo or the test suite.
# make check-portable: the suite under generic numeric kernels, 1 and 2 threads.
# make gpu-wheels (CPU machine, online) then make gpu-check (CUDA machine, may be offline):
# the cuda tests and every benchmark --quick on CPU and GPU, in one table (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

# One BLAS/torch thread unless the caller says otherwise (make test OMP_NUM_THREADS=2):
# the test problems are small, and on a loaded machine extra threads only wait.
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS

# python3 of a GPU machine holds a CUDA build of torch; certopt runs from this checkout.
GPU_PYTHON ?= python3
# What such a machine lacks, as CPython 3.12 manylinux wheels (.whl/, under 64 MiB): the pins
# of constraints.txt, except scs 3.2.7 and POT 0.9.5, whose newer wheels (43 and 33 MB) bundle
# MKL and an extension certopt does not use.
GPU_WHEELS = cvxpy==1.9.3 scs==3.2.7 ecos==2.0.14 clarabel==0.11.1 POT==0.9.5 osqp==1.1.3 \
             qdldl==0.1.9.post1 highspy==1.16.0 sparsediffpy==0.6.1 cffi==2.1.1 pycparser==3.12
PLATFORMS = $(foreach n,_2_28 _2_27 _2_24 _2_17 2014 1,--platform manylinux$(n)_x86_64)

.PHONY: demo test check-portable gpu-check gpu-wheels bench-deps lint clean

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

gpu-check:
	$(GPU_PYTHON) benchmarks/_gpu_check.py

gpu-wheels:
	rm -rf .whl && mkdir .whl
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp $(PLATFORMS) -d .whl $(GPU_WHEELS)
	du -sh .whl

# Optional packages that only the benchmarks compare against (never imported by certopt).
# pyscnn declares torchvision, which it does not need here and which would pull another torch.
BENCH_ONLY = eclipse-nn==0.1.7 pyscnn==0.0.10 linalg-backends==0.0.1b0 opt-einsum==3.4.0

bench-deps: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(BENCH_ONLY)

lint: $(STAMP)
	$(BIN)/ruff check certopt tests examples benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
