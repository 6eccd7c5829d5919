# One venv in the repo root; every target that runs code depends on it, so each works
# on a fresh clone. torch is pinned to the CPU build that lies on this machine's disk;
# pyproject keeps the range open for GPU users.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: install test demo bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH)"
	touch $(STAMP)

# Two pytest processes: the cluster test's `ray stop` would end the first one's local Ray.
test: install
	$(PY) -m pytest tests -m "not cluster"
	$(PY) -m pytest tests -m cluster

demo: install
	$(VENV)/bin/aikd demo --out runs/demo

lint: install
	$(VENV)/bin/ruff check platform tests bench

bench: install
	$(PY) bench/synth.py
	$(PY) bench/pipeline.py
	$(PY) bench/models.py
	$(PY) bench/label.py
	$(PY) bench/distill.py
	$(PY) bench/edc.py

clean:
	rm -rf $(VENV) .pytest_cache
