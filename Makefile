# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; override e.g. `make demo TORCH_SPEC="torch==2.14.1"` for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: demo test setup clean bench

$(BIN)/cropmap: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch in the same command as lightning, so pip cannot pick another torch build
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" -e ".[dev]"
	touch $@

setup: $(BIN)/cropmap

demo: setup
	$(BIN)/cropmap demo --out $(DEMO_OUT)

# TESTS=fast (default): the suite without the tests marked slow; TESTS=all: everything (what CI runs)
TESTS ?= fast
test: setup
	$(BIN)/python -m pytest -q $(if $(filter all,$(TESTS)),,-m "not slow")

# speed of every registered model, fast paths, allocator, data (~10-15 min on 2 cores); BENCH_ARGS=--quick for ~2 min
bench: setup
	$(BIN)/python benchmarks/bench_models.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info src/*.egg-info
