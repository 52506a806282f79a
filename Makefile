# Replace Background: one Makefile for set-up, training, serving, the GIMP plug-in and the tests.
# `make serve` (main job) and `make test` (the test suite) both set up .venv first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_NAME ?= person_segmenter
# GIMP 3 root for the headless plug-in tests, cached outside the clone.
GIMP_ROOT ?= /var/cache/replace-background/gimp3-root

.PHONY: setup test test-gimp-root test-fast lint mar serve stop train evaluate install-gimp-plugin gimp-root clean mediapipe-venv quality robustness bench gpu-data train-shipped matting-compare

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-compare.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup test-gimp-root
	$(VENV)/bin/ruff check .
	GIMP_ROOT=$(GIMP_ROOT) $(PY) -m pytest -ra

# Build (or reuse) the cached GIMP 3 root for the end-to-end plug-in tests. It needs root and the
# Debian mirror; where either is missing the GIMP tests skip and say why, the rest still runs.
test-gimp-root:
	@if [ "$$(id -u)" = 0 ]; then \
	    bash tests/gimp/make-gimp-root.sh $(GIMP_ROOT) || echo "warning: could not build the GIMP 3 root; GIMP tests will skip"; \
	else echo "note: not root, so no GIMP 3 root: the GIMP end-to-end tests will skip"; fi

test-fast: setup
	$(PY) -m pytest -ra -m "not slow"

# `make mar CHECKPOINT=runs/<run>/best.pt` archives your own checkpoint instead of the shipped weights.
CHECKPOINT ?=
mar: setup
	$(PY) training/export.py $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

train: setup
	$(PY) training/train.py

evaluate: setup
	$(PY) training/evaluate.py

# MediaPipe's selfie segmenter, the baseline to beat, lives in its own venv (never a project dependency).
MP_VENV ?= .venv-mediapipe
# Folder holding the eg1800/ and ccp/ data sets (each with Images/ and Masks/): `make quality DATASETS=/path`.
DATASETS ?= datasets

$(MP_VENV)/.installed:
	$(PYTHON) -m venv $(MP_VENV)
	$(MP_VENV)/bin/pip install -q mediapipe==0.10.21
	touch $@

mediapipe-venv: $(MP_VENV)/.installed

quality: setup mediapipe-venv
	@test -d $(DATASETS)/eg1800 -a -d $(DATASETS)/ccp || { echo "make quality: no $(DATASETS)/eg1800 and $(DATASETS)/ccp; run make quality DATASETS=/path/to/datasets"; exit 2; }
	$(PY) benchmarks/quality.py --data $(DATASETS)/eg1800 --data $(DATASETS)/ccp \
	    --val-list training/splits/shared_val.txt --grid docs/images/quality_grid.png

# Hard cases built from the validation split (cut by the frame, groups, small far people), ours vs MediaPipe.
robustness: setup mediapipe-venv
	@test -d $(DATASETS)/eg1800 -a -d $(DATASETS)/ccp || { echo "make robustness: no $(DATASETS)/eg1800 and $(DATASETS)/ccp; run make robustness DATASETS=/path/to/datasets"; exit 2; }
	$(PY) benchmarks/robustness.py --data $(DATASETS)/eg1800 --data $(DATASETS)/ccp \
	    --val-list training/splits/shared_val.txt --limit 60

# The edge stage against the plain blend and rembg's alpha matting on 24 validation photos, soft and fine
# (hair-like) mattes (docs/BENCHMARKS.md, "Edge stage"). Installs the benchmark-only pymatting first.
matting-compare: setup
	@test -d $(DATASETS)/eg1800 -a -d $(DATASETS)/ccp || { echo "make matting-compare: no $(DATASETS)/eg1800 and $(DATASETS)/ccp; run make matting-compare DATASETS=/path/to/datasets"; exit 2; }
	$(PY) -m pip install -q -r requirements-compare.txt
	$(PY) benchmarks/tuning/matting_quality.py --data $(DATASETS)/eg1800 --data $(DATASETS)/ccp \
	    --val-list training/splits/shared_val.txt --limit 24 --crops docs/images --speed 1 12

# The shipped model's whole recipe, person-segmenter 1.0.0 from ImageNet weights (about 8 h on 2 CPU cores;
# docs/TRAINING.md): DATASETS holds ccp/, eg1800/ and vikram/; runs go to TRAIN_WORK.
TRAIN_WORK ?= runs/shipped
train-shipped: setup
	@test -d $(DATASETS)/eg1800 -a -d $(DATASETS)/ccp -a -d $(DATASETS)/vikram || { echo "make train-shipped: no $(DATASETS)/{eg1800,ccp,vikram}; run make train-shipped DATASETS=/path/to/datasets"; exit 2; }
	$(PY) training/recipes/shipped.py --datasets $(DATASETS) --work $(TRAIN_WORK)

# A WebP copy of the data sets at the size the shipped recipe's restarts train at (GPU_SIZE, long side; ~33 MB
# at 384) that can travel to a GPU machine, for training/gpu_run.sh (docs/TRAINING.md, "On a GPU").
# gpu_data/ is not committed.
GPU_SIZE ?= 384
gpu-data: setup
	@test -d $(DATASETS)/eg1800 -a -d $(DATASETS)/ccp -a -d $(DATASETS)/vikram || { echo "make gpu-data: no $(DATASETS)/{eg1800,ccp,vikram}; run make gpu-data DATASETS=/path/to/datasets"; exit 2; }
	rm -rf gpu_data
	for r in ccp eg1800 vikram; do $(PY) training/shrink.py $(DATASETS)/$$r --out gpu_data/$$r --long-side $(GPU_SIZE) --format webp --quality 70 || exit 1; done
	du -sh gpu_data

# Speed benchmarks (docs/BENCHMARKS.md): each prints a table. Run them on an otherwise idle machine.
bench: setup
	$(PY) benchmarks/stages.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/serving.py --memory
	$(PY) benchmarks/training_speed.py
	$(PY) benchmarks/data_loading.py

# --- serving (docs/SERVING.md) ---
serve: mar
	$(PY) -m handler.serve start

stop: setup
	$(PY) -m handler.serve stop

# --- GIMP plug-in (docs/GIMP.md) ---
# install.py (standard library only, no bash: the same command on Windows and macOS) also copies
# handler/contract.py into the installed plug-in: the plug-in cannot import the project, and the
# repository keeps one copy of the contract. Uninstall: python3 gimp_plugin/install.py --uninstall
install-gimp-plugin:
	python3 gimp_plugin/install.py

gimp-root:
	bash tests/gimp/make-gimp-root.sh $(GIMP_ROOT)

clean:
	rm -rf build runs serve .pytest_cache .ruff_cache

# --- container image (docs/DEPLOY.md) ---
# Builds the image with podman from a fresh clone of this checkout (what is committed), runs it, and
# runs deploy/kubernetes/ with `podman kube play`. Installs podman with apt when root and it is missing,
# and makes the Containerfile's base image with mmdebstrap when no registry gives it; where podman
# cannot run, the tests skip and say why. Not part of `make test`: the image is several GB.
.PHONY: container-test
container-test: setup
	bash tests/container/prepare.sh
	CONTAINER_TEST=1 CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/tests/container/containers.conf} \
	    GIMP_ROOT=$(GIMP_ROOT) $(PY) -m pytest tests/container -ra -p no:cacheprovider
