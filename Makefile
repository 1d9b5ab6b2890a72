# `make run` and `make test` each build the environment from nothing when it is missing or out of date.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-slow test-slurm gpu-check report calibrate reproduce verify figures main-reference \
        screenshots bench clean

setup: $(STAMP)

# Exact pins from requirements.lock (torch==2.13.0 is the CPU wheel on this machine's disk), then the project.
$(STAMP): requirements.lock pyproject.toml
	@echo "set-up [1/3]: creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "set-up [2/3]: installing the pinned dependencies of requirements.lock (torch, hydra, wandb...; 1-3 minutes)"
	$(PY) -m pip install --quiet -r requirements.lock
	@echo "set-up [3/3]: installing gradclip itself"
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) run.py -m clip=none,norm1

# One pytest worker per core (pytest-xdist; -n auto = the cores here), each test sent to whichever worker is free.
test: $(STAMP)
	$(PY) -m pytest -m "not slow and not slurm" -n auto --dist worksteal

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not slurm" -n auto --dist worksteal

# hydra/launcher=slurm on a one-node SLURM cluster of this machine (root: installs Debian's slurm-wlm and munge
# when missing, starts and stops the daemons: tests/slurm/setup.sh). docs/sweeps.md: ~5 minutes.
test-slurm: $(STAMP)
	$(PY) -m pytest -m slurm

# Rebuild a sweep's report from its files: make report SWEEP=multirun/<date>/<time>
report: $(STAMP)
	$(PY) -m gradclip.report $(SWEEP)

# Every claim experiment: sweeps, tables (results/<name>/*.csv), figures, results/REPORT.md and report.html.
# Killed, it continues where it stopped when run again (finished runs are kept under results/runs/).
# SCALE=paper: the exploding and smoothness experiments' char-LSTM runs at conf/preset/charlm_lstm_paper.yaml's
# scale, into results/paper/ (docs/usage.md: what it runs and what it costs; a GPU or a cluster's job).
PAPER := exploding smoothness --results results/paper --override hydra.sweeper.params.setup=charlm_lstm \
         --override +preset=charlm_lstm_paper
reproduce: $(STAMP)
	$(PY) experiments/reproduce.py $(if $(filter paper,$(SCALE)),$(PAPER))

# The tuned comparisons' deciding stage again, on a second fresh block of seeds (after `make reproduce`; resumable).
verify: $(STAMP)
	$(PY) -m experiments.tuned --verify

# Figures and report again from the stored tables, without training (and the README's generated blocks).
figures: $(STAMP)
	$(PY) experiments/reproduce.py --figures
	$(PY) experiments/readme.py

# The main job's committed reference run (the README quotes its answer): built beside results/main, swapped in.
main-reference: $(STAMP)
	rm -rf results/.main.new
	$(PY) run.py -m clip=none,norm1 seed=0,1,2,3 logger=none hydra.sweep.dir=results/.main.new
	$(PY) -c "from experiments.runner import cpu; print(cpu())" > results/.main.new/machine.txt
	rm -rf results/main && mv results/.main.new results/main
	$(PY) experiments/readme.py

# Both reports as a browser shows them (headless Chromium: apt-get install chromium) into docs/screenshots/.
screenshots: $(STAMP)
	$(PY) -m gradclip.screenshots results/report.html results/main/report/report.html --out docs/screenshots

# The default job's calibration (README), regenerated into results/calibration: built beside it, swapped in when done.
calibrate: $(STAMP)
	rm -rf results/.calibration.new
	$(PY) run.py -m +experiment=calibration logger=none hydra.sweep.dir=results/.calibration.new
	$(PY) experiments/calibration.py results/.calibration.new || echo "calibration: the default failed its rule (kept: it is a result)"
	rm -rf results/calibration && mv results/.calibration.new results/calibration
	$(PY) -m gradclip.report results/calibration

# Plain loop vs the suite, clipping's share of a step, LSTM vs matmul peak, GPT step: benchmarks/RESULTS.md (< 10 min).
bench: $(STAMP)
	$(PY) benchmarks/bench.py

# On a CUDA machine: the gpu-marked tests, a device=auto job, bf16/fp16 gradient norms against fp32, a model step's
# tokens/s and MFU, into benchmarks/GPU.md (< 8 min). Without CUDA: one line, exit 0.
gpu-check: $(STAMP)
	@$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
