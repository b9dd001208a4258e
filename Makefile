# Ternaus for QGIS: one-command set-up, tests, demo and benchmarks.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.setup-done
export QT_QPA_PLATFORM := offscreen

APT_PACKAGES := python3-qgis python3-gdal python3-venv python3-dev gcc g++ qgis xvfb xauth zip unzip

.PHONY: setup test test-fast demo bench bench-engines bench-loop bench-where-to-label bench-calibration train-default serve lint clean package deploy screenshot \
	wheel package-with-backend

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "Installing apt packages: $(APT_PACKAGES)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	fi
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PIP) install -q torch==2.13.0
	# attrs>=23.2 over Debian's 22.2 (seen through the system site-packages), which breaks affine 3
	$(PIP) install -q "numpy<2" "attrs>=23.2" setuptools_scm wheel "setuptools>=68"
	$(PIP) install -q -e ".[dev,cluster,engines]"
	@$(PY) -c "import inplace_abn" 2>/dev/null || \
		$(PIP) install -q --no-cache-dir --no-build-isolation inplace-abn==1.1.0 || \
		echo "inplace-abn did not build: the pure-PyTorch ABN will be used"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(PY) scripts/demo.py --out demo_out

bench: setup
	$(PY) benchmarks/bench_encoders.py --size 512 --rounds 5
	$(PY) benchmarks/bench_extract.py --sizes 2048 8192 --json bench_out.json
	$(PY) benchmarks/bench_reference.py --size 2048
	$(PY) benchmarks/bench_cluster.py --size 4096 --block-px 2048

# The CPU engines side by side (issue 20): torch bf16/float32, ONNX Runtime, OpenVINO (+ int8,
# which needs NNCF, installed here only) on an OAM mosaic's windows, and each one's buildings on
# its held-out area (about 15 min on 2 idle cores).
bench-engines: setup
	$(PIP) install -q nncf==3.4.0
	$(PY) benchmarks/bench_engines.py --area nairobi --windows 10 --rounds 3 --int8 \
		--json build/bench_engines.json

# The user's loop on real imagery (about 50 min on 2 cores): label a block of each OAM area,
# fine-tune with the Train tab's defaults, score the rest of the area (README, issue 17).
bench-loop: setup
	$(PY) benchmarks/bench_loop.py --json build/bench_loop.json

# Where to label next (issue 19): per OAM area, fine-tune on the 3 top-ranked cells vs 3 random
# cells (Train tab defaults), F1 on the rest of the area (about 1 h per area on 2 busy cores).
bench-where-to-label: setup
	$(PY) benchmarks/bench_where_to_label.py --json build/bench_where_to_label.json

# The default model's confidence calibration: fitted on the OAM areas' training parts, ECE on their
# held-out quarters before/after (README, issue 19); --write stores it beside the model.
bench-calibration: setup
	$(PY) benchmarks/bench_calibration.py --json build/bench_calibration.json --write

# The embedded default model: light encoder, RGB, OpenAerialMap mosaics, Banepa chips and Rio tiles
# from ../shared/data (used by path); see scripts/train_default.sh.
train-default: setup
	PY=$(PY) scripts/train_default.sh resources/models/default.safetensors
	$(PY) benchmarks/bench_calibration.py --json build/bench_calibration.json --write

# The QGIS plugin zip (dist/ternaus_qgis-<version>.zip), and its installation into a QGIS profile
# (PROFILE=default; PROFILES_PATH=<dir> for another profiles folder) with this checkout's backend.
PROFILE ?= default
package:
	python3 scripts/package_plugin.py package

# The backend as a wheel (dist/ternaus_backend-<version>-py3-none-any.whl, default model inside),
# for the plugin's "Install backend…"; and the plugin zip with that wheel bundled in it.
wheel: setup
	$(PIP) install -q "setuptools>=68" wheel
	$(PY) scripts/build_wheel.py --out dist

package-with-backend: wheel
	python3 scripts/package_plugin.py package --wheel "$$(ls -t dist/ternaus_backend-*.whl | head -1)"

deploy: setup
	$(PY) scripts/package_plugin.py deploy --profile "$(PROFILE)" $(if $(PROFILES_PATH),--profiles-path "$(PROFILES_PATH)")

# The README's screenshots: the real QGIS desktop (Xvfb) with the packaged plugin: an extraction,
# training on the reference buildings (while it runs), the evaluation's error layers; the Map check
# and Changes tabs on Nairobi's imagery and OpenStreetMap buildings, the Train tab's proposed cells.
screenshot: setup
	SCENE=$$($(PY) scripts/screenshot_scene.py build/screenshot_scene.tif); \
	LABELS=$${SCENE:+$${SCENE%.tif}_labels.geojson}; \
	TERNAUS_DESKTOP_SCENE=$$SCENE TERNAUS_DESKTOP_SHOT=docs/qgis-desktop.png \
		TERNAUS_DESKTOP_LABELS=$$LABELS \
		TERNAUS_DESKTOP_TRAIN_SHOT=docs/qgis-training.png \
		TERNAUS_DESKTOP_EVAL_SHOT=docs/qgis-evaluation.png \
		$(PY) -m pytest -q -s tests/qgis/test_desktop.py
	TERNAUS_DESKTOP_MAP_CHECK_SHOT=docs/qgis-map-check.png \
		TERNAUS_DESKTOP_CHANGES_SHOT=docs/qgis-changes.png \
		TERNAUS_DESKTOP_WHERE_TO_LABEL_SHOT=docs/qgis-where-to-label.png \
		$(PY) -m pytest -q -s tests/qgis/test_desktop_comparison.py

lint: setup
	$(VENV)/bin/ruff check ternaus_backend tests ternaus_qgis

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache demo_out bench_out.json
