# One venv in the repo root; every target that runs code depends on it, so each works
# on a fresh clone. torch is pinned to the CPU build that lies on this machine's disk;
# pyproject keeps the range open for GPU users.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
# the mtcnn detector's weights; the wheel pins an old torch, so it goes in without its dependencies
DETECTOR_WEIGHTS := facenet-pytorch==2.6.0

.PHONY: install test demo bench lint clean mlflow-ui

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH)"
	$(PY) -m pip install --quiet --no-deps "$(DETECTOR_WEIGHTS)"
	# DeepSpeed's CPU op, JIT-built by the first run otherwise (a minute of g++ here); without a C++ compiler
	# the install goes on: only the deepspeed strategy on a CPU needs the op
	$(PY) -c "from aikd.distill.strategy import build_cpu_ops; build_cpu_ops()" \
	  || echo "aikd: DeepSpeed's CPU op did not build (a C++ compiler?): on a CPU, use distill's strategy: ddp"
	touch $(STAMP)

# Two pytest-xdist workers, each with its own local Ray instance (tests/conftest.py says which tests share a
# worker); the cluster tests, the last scope handed out, start their Ray nodes with `ray start` (token auth on)
# and give them none of the worker's own Ray settings.
test: install
	$(PY) -m pytest tests -n 2 --durations=30

demo: install
	$(VENV)/bin/aikd demo --out runs/demo

# MLflow's web UI over the local tracking store (runs/mlflow.db). The UI ships only in the
# full `mlflow` package, which pins pyarrow<26, so it gets a venv of its own.
UI_VENV := .venv-ui
MLFLOW_UI_PORT ?= 5000
mlflow-ui:
	test -x $(UI_VENV)/bin/mlflow || (python3 -m venv $(UI_VENV) && $(UI_VENV)/bin/pip install --quiet "mlflow==3.17.2")
	$(UI_VENV)/bin/mlflow ui --backend-store-uri sqlite:///runs/mlflow.db --host 127.0.0.1 --port $(MLFLOW_UI_PORT)

lint: install
	$(VENV)/bin/ruff check platform tests bench

bench: install
	$(PY) bench/synth.py
	$(PY) bench/pipeline.py
	$(PY) bench/models.py
	$(PY) bench/label.py
	$(PY) bench/distill.py
	$(PY) bench/edc.py
	$(PY) bench/score.py
	$(PY) bench/sweep.py

clean:
	rm -rf $(VENV) $(UI_VENV) .pytest_cache
