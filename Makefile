# Quick start: `make run` trains (first time) and serves; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.toml

.PHONY: run test chaos lint browser image bench bench-coldstart bench-recovery bench-serving bench-drift bench-swap \
	bench-serving-adult bench-footprint bench-growth bench-drift-adult bench-training bench-peers \
	bench-peers-adult bench-request-path bench-ray clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes; the stamp remembers the last install.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,ray]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/selfheal run --config $(CONFIG)

# Debian packages the tests drive, installed here when missing (needs root, as in CI): chromium
# for the dashboard tests, systemd-analyze (package systemd) for the unit's checks, python3-venv
# for the installer's tests (deploy/install.sh builds the service's venv on /usr/bin/python3),
# podman, runc and mmdebstrap for the container tests (the image, and systemd booted as PID 1),
# prometheus (the server and promtool) for deploy/prometheus's rule checks and the alerting test.
browser:
	@missing=""; \
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || missing="chromium chromium-driver"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v podman >/dev/null && command -v runc >/dev/null || missing="$$missing podman runc uidmap slirp4netns fuse-overlayfs"; \
	command -v mmdebstrap >/dev/null || missing="$$missing mmdebstrap"; \
	command -v promtool >/dev/null && test -x /usr/bin/prometheus || missing="$$missing prometheus"; \
	/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(VENV)/.installed-test browser
	$(BIN)/ruff check selfheal_daemon service tests bench deploy/ci
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows deploy/ci/github-actions.yml
	cd deploy/prometheus && promtool check rules recording.rules.yml alerts.rules.yml && \
		promtool check config prometheus.yml && promtool test rules tests.yml
	$(BIN)/python -m pytest

# The fault and abuse suite alone (it runs in `make test` too): its figures go to
# bench/out/chaos.json and into the marked block of docs/RELIABILITY.md, failed or not.
chaos: $(VENV)/.installed-test browser
	SELFHEAL_CHAOS_REPORT=bench/out/chaos.json $(BIN)/python -m pytest -m chaos; status=$$?; \
	$(BIN)/python -m bench.chaos_doc bench/out/chaos.json docs/RELIABILITY.md; exit $$status

# The container image (deploy/container/Containerfile), built with no network from a wheelhouse.
# BASE=IMAGE picks the base (the Containerfile's default is a public slim Python 3.11 image);
# with no registry reachable, as here, the default is a Debian root filesystem built from
# Debian's mirror by deploy/container/rootfs.sh (once). Run it with
#   deploy/container/podman.sh run -d -p 127.0.0.1:8000:8000 -v selfheal-state:/var/lib/selfheal localhost/selfheal:0.1.0
IMAGE_BASE ?= localhost/selfheal-base:bookworm
image: browser
	@if [ "$(IMAGE_BASE)" = localhost/selfheal-base:bookworm ] && \
		! deploy/container/podman.sh image exists $(IMAGE_BASE); then deploy/container/rootfs.sh; fi
	deploy/container/build.sh --base $(IMAGE_BASE)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check selfheal_daemon service tests bench deploy/ci
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows deploy/ci/github-actions.yml

# Every benchmark, each against its baseline, in one run (about 35 min; QUICK=1: every comparison,
# tiny, in a few minutes, written to bench/out/): bench/results.json and the summary at the top of
# docs/BENCHMARKS.md. The baselines live in the benchmarks' own venvs, never in the project's.
bench:
	$(PYTHON) -m bench.suite $(if $(QUICK),--quick)

bench-coldstart: $(VENV)/.installed
	$(BIN)/python -m bench.cold_start

# Builds its own bench/.venv (with supervisord, never a project dependency); QUICK=1 for a short run.
bench-recovery:
	$(PYTHON) -m bench.recovery $(if $(QUICK),--quick) --json bench/out/recovery.json

# Side by side with a bare FastAPI app under wrk (installed with apt-get if missing).
bench-serving:
	$(PYTHON) -m bench.serving $(if $(QUICK),--quick) --json bench/out/serving.json

# The same on the Adult example (trained first, about 10 s) against the FastAPI app a user would
# write for it (bench/bare_app_adult.py: pydantic, a pandas DataFrame, predict_proba).
# The Ray Serve backend against the local backend (2 replicas each): throughput, p99, and the time
# from a promotion to every replica on the new version. Needs root: the Ray cluster runs in a
# network namespace of its own with nothing but loopback.
bench-ray:
	$(PYTHON) -m bench.ray_backend $(if $(QUICK),--quick) --json bench/out/ray_backend.json

bench-serving-adult:
	$(PYTHON) -m bench.serving --model adult $(if $(QUICK),--quick) --json bench/out/serving_adult.json

# Against MLServer (sklearn runtime, adaptive batching) and BentoML (a batchable API), each in its
# own venv (bench/.venv-mlserver, bench/.venv-bentoml), and a no-work route (the ceiling).
bench-peers:
	$(PYTHON) -m bench.peers $(if $(QUICK),--quick) --json bench/out/peers.json

bench-peers-adult:
	$(PYTHON) -m bench.peers --model adult $(if $(QUICK),--quick) --json bench/out/peers_adult.json

# A worker's request path in-process (no uvicorn): the fast path, the route alone, the ceiling.
bench-request-path:
	$(PYTHON) -m bench.request_path --json bench/out/request_path.json
	$(PYTHON) -m bench.request_path --model adult --json bench/out/request_path_adult.json

# Builds its own bench/.venv-drift (with Evidently, never a project dependency); QUICK=1 for a short run.
bench-drift:
	$(PYTHON) -m bench.drift $(if $(QUICK),--quick) --json bench/out/drift.json

# The drift check on the Adult example's 14 mixed columns at 1M rows, against Evidently configured
# to the same statistics (in bench/.venv-drift, as bench-drift); QUICK=1: a 100k-row window.
bench-drift-adult:
	$(PYTHON) -m bench.drift_adult $(if $(QUICK),--quick) --json bench/out/drift_adult.json

# Training the first model as `selfheal run` does (bootstrap.ensure_model), Adult and California.
bench-training:
	$(PYTHON) -m bench.training $(if $(QUICK),--quick) --json bench/out/training.json

# A model change under load: swapped in place inside the workers, against replacing the workers.
bench-swap:
	$(PYTHON) -m bench.swap $(if $(QUICK),--quick) --json bench/out/swap.json

# The daemon at idle (2 workers, default probes) against supervisord keeping 2 processes.
bench-footprint:
	$(PYTHON) -m bench.footprint $(if $(QUICK),--quick) --json bench/out/footprint.json

# Drift check and report time as the data and the audit trail grow tenfold.
bench-growth:
	$(PYTHON) -m bench.growth $(if $(QUICK),--quick) --json bench/out/growth.json

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
