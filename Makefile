# tfx-recsys: `make run` and `make test` are the two commands; both set up
# what is missing first. See README.md.
#
# setup: uv (pinned, into .tools/ if absent) -> .venv from the hashed lock ->
# this package (editable) -> the glibc compatibility step (only where needed).

PYTHON        ?= python3.11
UV_VERSION    := 0.13.8
# The lock holds manylinux_2_39 wheels (ml-metadata has no older ones); uv
# installs them on older hosts and platform_compat makes them load.
UV_PLATFORM   := x86_64-manylinux_2_39
VENV          := .venv
VENV_PY       := $(VENV)/bin/python
LOCK          := requirements/requirements.lock
STAMP         := $(VENV)/.setup-complete
SYSTEM_UV     := $(shell command -v uv 2>/dev/null)
UV            := $(if $(and $(SYSTEM_UV),$(findstring $(UV_VERSION),$(shell uv --version 2>/dev/null))),$(SYSTEM_UV),.tools/uv/bin/uv)
# Never let uv fetch a Python build from the internet: use the host's 3.11.
export UV_PYTHON_DOWNLOADS := never
export TF_USE_LEGACY_KERAS := 1

.PHONY: setup system-packages run test test-fast test-flink bench bench-serving bench-quality bench-throughput bench-scale bench-backtest bench-load bench-continuous bench-recommend lock clean

setup: $(STAMP)

.tools/uv/bin/uv: requirements/uv.txt
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --require-hashes \
	    --target .tools/uv --upgrade -r requirements/uv.txt
	@touch $@

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (many containers)
# every process would otherwise compile TensorFlow's sources again on import
# (measured: `import tensorflow` 17.5 s without, 6.8 s with, 2 cores).
$(STAMP): $(LOCK) setup.py tfx_recsys/platform_compat.py | $(UV)
	@test -x $(VENV_PY) || $(UV) venv --python $(PYTHON) $(VENV)
	$(UV) pip sync --python $(VENV_PY) --python-platform $(UV_PLATFORM) --compile-bytecode $(LOCK)
	$(UV) pip install --python $(VENV_PY) --no-deps -e .
	$(VENV_PY) -m tfx_recsys.platform_compat
	@touch $@

run: setup
	$(VENV)/bin/recsys run

test: setup system-packages
	$(VENV_PY) -m pytest

# The pipeline on a local Flink cluster (tests/test_flink.py): about 25
# minutes on two cores, mostly Flink starting a Python worker (and importing
# TensorFlow) per task, so `make test` leaves it out.
test-flink: setup flink
	RECSYS_TEST_FLINK=1 $(VENV_PY) -m pytest tests/test_flink.py

# The edit loop: everything but the pipeline runs, trainings, servers and
# benchmarks (the `integration` mark, see tests/conftest.py).
test-fast: setup
	$(VENV_PY) -m pytest -m "not integration"

# Debian packages some tests need: a MariaDB server (ML Metadata on MySQL)
# and Chromium (the run report is rendered headless). Installed only when
# missing; needs root (CI runs as root) or an admin to install them once.
SYSTEM_PACKAGES := mariadb-server chromium
system-packages:
	@if command -v mariadbd >/dev/null && command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null \
	    || { apt-get update -q >/dev/null && \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null; }; \
	else echo "missing Debian packages: run 'sudo apt-get install $(SYSTEM_PACKAGES)'" >&2; exit 1; fi

# Apache Flink for `recsys run --beam flink` (not part of `make setup`):
# Flink 1.19.3 from PyPI (flink/requirements.txt, hash-checked, --no-deps)
# into build/flink/python, and the classpath of Beam's Flink job server from
# Maven Central (flink/pom.xml; Maven's strict checksums, then every jar's
# sha256 against flink/jobserver.sha256) into build/flink/jobserver. Needs
# Java 11+ and Maven: installed from Debian when missing (as root).
# `make test` runs it where Java and Maven are (or can be) installed.
FLINK_DIR   := build/flink
FLINK_STAMP := $(FLINK_DIR)/.complete
FLINK_DEBIAN_PACKAGES := openjdk-17-jre-headless maven
.PHONY: flink

flink: $(FLINK_STAMP)

$(FLINK_STAMP): flink/requirements.txt flink/pom.xml flink/jobserver.sha256 | $(STAMP)
	@if command -v java >/dev/null && command -v mvn >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(FLINK_DEBIAN_PACKAGES) >/dev/null \
	    || { apt-get update -q >/dev/null && \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(FLINK_DEBIAN_PACKAGES) >/dev/null; }; \
	else echo "missing Java/Maven: run 'sudo apt-get install $(FLINK_DEBIAN_PACKAGES)'" >&2; exit 1; fi
	rm -rf $(FLINK_DIR)/python $(FLINK_DIR)/jobserver
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check --no-deps \
	    --no-build-isolation --require-hashes --target $(FLINK_DIR)/python \
	    -r flink/requirements.txt
	mvn -B -q -C -f flink/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	    -DoutputDirectory=$(abspath $(FLINK_DIR))/jobserver
	cd $(FLINK_DIR)/jobserver && sha256sum --quiet --strict -c $(CURDIR)/flink/jobserver.sha256 \
	    && test "$$(ls | wc -l)" = "$$(wc -l < $(CURDIR)/flink/jobserver.sha256)"
	@touch $@

# All benchmarks; each prints a table and writes bench/results/.
bench: bench-quality bench-throughput bench-serving

# Serving latency and recall: ScaNN vs brute force on 10K/100K/1M items.
bench-serving: setup
	$(VENV_PY) bench/serving.py

# Retrieval quality on MovieLens-100K: every model beside the baselines
# (temporal split) and the TFRS tutorial protocol.
bench-quality: setup
	$(VENV_PY) bench/quality.py

# Training throughput of the pipeline's Trainer against a bare TFRS loop.
bench-throughput: setup
	$(VENV_PY) bench/throughput.py

# The whole pipeline on synthetic data of 1M and 10M interactions: wall
# time and peak memory per component (about 1.5 hours on 2 cores; not part
# of `make bench`).
bench-scale: setup
	$(VENV_PY) bench/scale.py

# What users get: the pushed model, queried through serving_default in a
# fresh process, scored on MovieLens-100K interactions after its data's cut.
bench-backtest: setup
	$(VENV_PY) bench/backtest.py

# Continuous training replayed: MovieLens-100K as 8 spans; per span a refresh,
# a warm-started run and a cold run, each scored on the next span (about an
# hour on two cores; not part of `make bench`).
bench-continuous: setup
	$(VENV_PY) bench/continuous.py $(BENCH_CONTINUOUS_ARGS)

# `recsys serve` on 127.0.0.1 under 1, 10, 50 and 200 concurrent keep-alive
# clients, V1 and V2, ScaNN and exact retrieval: requests/s, p50/p99, errors
# (about 10 minutes; not part of `make bench`). BENCH_LOAD_ARGS: e.g.
# --root runs/X, or --before FILE to measure an older server beside it.
bench-load: setup
	$(VENV_PY) bench/load.py $(BENCH_LOAD_ARGS)

# `recsys recommend` cold and against a running `recsys serve` (runs/default).
bench-recommend: setup
	$(VENV_PY) bench/recommend.py $(BENCH_RECOMMEND_ARGS)

# The image every Kubeflow task runs (kubeflow/Dockerfile), built without a
# Docker engine: podman with chroot isolation (see kubeflow/README.md). Its
# base: IMAGE_BASE if given, else the one `make image-base` built, else the
# public Python image (a registry must be reachable). Where the host's CA
# bundle (SSL_CERT_FILE) or uv cache exist, the build mounts them: TLS through
# a proxy only the host trusts, and wheels from the cache; neither stays in
# the image.
.PHONY: image image-base
IMAGE       ?= localhost/tfx-recsys:latest
LOCAL_BASE  := localhost/tfx-recsys-base:bookworm
IMAGE_BASE  ?=
DEBIAN_MIRROR ?= http://deb.debian.org/debian

image: setup
	@base="$(IMAGE_BASE)"; \
	source=$$($(VENV_PY) -c 'from tfx_recsys.pipeline import kubeflow_runner as k; print(k.image_source_fingerprint())'); \
	if [ -z "$$base" ] && podman image exists $(LOCAL_BASE); then base=$(LOCAL_BASE); fi; \
	ca="$${SSL_CERT_FILE:-}"; cache="$$($(UV) cache dir 2>/dev/null || true)"; \
	set -x; podman build --isolation chroot -f kubeflow/Dockerfile \
	    --ignorefile kubeflow/containerignore -t $(IMAGE) \
	    --build-arg SOURCE_FINGERPRINT=$$source \
	    $${base:+--build-arg BASE_IMAGE=$$base} \
	    $$( [ -f "$$ca" ] && echo "-v $$ca:/run/host-ca.crt:ro --build-arg CA_BUNDLE=/run/host-ca.crt" ) \
	    $$( [ -d "$$cache" ] && echo "-v $$cache:/run/uv-cache --build-arg UV_CACHE_MOUNT=/run/uv-cache" ) \
	    .
	podman image ls $(IMAGE)

# An equivalent of the public python:3.11 image from Debian's mirror alone
# (no registry needed): Debian 12 with its Python 3.11 (headers and venv
# included, as the Python images have them), CA certificates and g++ (for the
# lock's one native sdist and the glibc compatibility step).
image-base:
	mkdir -p build
	mmdebstrap --variant=minbase \
	    --include=python3.11,python3.11-dev,python3.11-venv,ca-certificates,g++ \
	    bookworm build/base.tar $(DEBIAN_MIRROR)
	podman import --change 'CMD ["python3.11"]' build/base.tar $(LOCAL_BASE)
	rm -f build/base.tar
	podman image ls $(LOCAL_BASE)

# Re-resolve the lock after editing requirements/requirements.in.
lock: | $(UV)
	$(UV) pip compile requirements/requirements.in \
	    --override requirements/overrides.txt \
	    --python-platform $(UV_PLATFORM) --python-version 3.11 \
	    --generate-hashes -o $(LOCK)

clean:
	rm -rf $(VENV) .tools runs
