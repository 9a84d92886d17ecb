# iotfleet.aziot — developer entry points.  `make test` runs everything CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
COLL_LINK := .collections/ansible_collections/iotfleet/aziot
SANITY_DIR ?= build/sanity
SANITY_ROOT := $(SANITY_DIR)/ansible_collections/iotfleet/aziot
PYTEST_ARGS ?=

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(BIN):$(PATH)
# Containers built for tests use the repo's podman settings (DESIGN.md §7).
export CONTAINERS_CONF := $(CURDIR)/tests/containers/containers.conf

.PHONY: help venv lint ruff ansible-lint sanity unit integration reliability images containers molecule test demo bench bench-smoke bench-smoke-podman bench-smoke-ssh clean

# `make help` is made from the `## ` comment on each target's line, and its last line from `test:`'s prerequisites, so
# neither can drift from what the targets are; tests/unit/test_makefile.py checks every suite of `make test` has one.
help: ## this list
	@awk 'BEGIN { FS = ":[^#]*## " } /^[a-zA-Z0-9_-]+:[^=]*## / { printf "make %-19s %s\n", $$1, $$2 }' $(firstword $(MAKEFILE_LIST))
	@echo "make test                every suite below, in this order, as root (what CI runs; .ci/run):"
	@echo "                         $$(sed -n 's/^test: *//p' $(firstword $(MAKEFILE_LIST)))"

# make test drives rootful podman and debootstrap, and the simulated devices' files belong to root: without root it
# would skip whole suites and still pass. So it refuses up front, in one line.
ifneq ($(filter test,$(MAKECMDGOALS)),)
ifneq ($(shell id -u),0)
$(error make test needs root (rootful podman, debootstrap, device files owned by root): run it as root, e.g. sudo make test; without root run the suites that need none: make lint sanity unit integration)
endif
endif

venv: $(VENV)/.installed $(COLL_LINK) ## build .venv with every Python dependency

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Lets ansible-doc/ansible-playbook find iotfleet.aziot from the repo root (see ansible.cfg).
$(COLL_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

ruff: venv
	ruff check .
	ruff format --check .

ansible-lint: venv
	ansible-lint

lint: ruff ansible-lint ## ruff (check + format) and ansible-lint (production profile)

# ansible-test needs the collection under ansible_collections/<ns>/<name>: test a copy of
# the collection content git would ship (tracked + untracked-not-ignored). tools/, bench/ and
# tests/ are not collection content; ruff and pytest cover them. tests/sanity/ignore.txt becomes the copy's
# tests/sanity/ignore-<ansible-core X.Y>.txt: x509_device_cert's module takes internal options its action plugin
# sends and documents options that stay on the controller, as ansible-core's copy does (ansible-lint's production
# profile refuses those two entries in a tests/sanity/ignore-X.Y.txt, which is why the file has another name here).
sanity: venv ## ansible-test sanity on a copy of the collection content
	@# ansible-test downloads a get-pip.py from a host we cannot reach: give it our offline stand-in.
	pip_version=$$(grep -ho "pip='[0-9.]*'" $(BIN)/../lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | grep -o "[0-9.]*"); \
	  mkdir -p ~/.ansible/test/cache && cp tests/sanity/get_pip.py ~/.ansible/test/cache/get_pip_$${pip_version//./_}.py
	rm -rf $(SANITY_DIR) && mkdir -p $(SANITY_ROOT)
	git ls-files -co --exclude-standard | grep -vE '^(tools|bench|extensions|scripts|tests)/' | \
	  while read -r f; do [ -e "$$f" ] && cp --parents -P "$$f" $(SANITY_ROOT)/; done
	core=$$($(BIN)/python -c 'from ansible.release import __version__ as v; print(".".join(v.split(".")[:2]))'); \
	  mkdir -p $(SANITY_ROOT)/tests/sanity && cp tests/sanity/ignore.txt $(SANITY_ROOT)/tests/sanity/ignore-$$core.txt
	cd $(SANITY_ROOT) && git init -q && git add -A && \
	  ansible-test sanity --venv --python 3.11 --color no

unit: venv ## pytest tests/unit tests/bench (no network, no containers)
	pytest -q tests/unit tests/bench $(PYTEST_ARGS)

# The host's packages (tests/containers/install-host-deps.sh: podman & co., swtpm + tpm2-tools for the software TPM,
# chromium); it installs only what is missing. Needs root, as the container targets do.
.PHONY: host-deps
host-deps: ## install the host packages the tests use (podman, qemu, swtpm, tpm2-tools, chromium)
	tests/containers/install-host-deps.sh

# The DPS emulator's own suite (tests/emulator) runs real mutual TLS, so it lives here too; its TPM attestation tests
# drive it with a software TPM (swtpm + tpm2-tools).
integration: venv host-deps ## real playbooks and the DPS emulator's own suite, against the emulator
	pytest -q tests/integration tests/emulator $(PYTEST_ARGS)

# The DPS and IoT Hub emulator judged by Microsoft's Node SDKs (docs/dps_emulator.md, "Judged by Microsoft's SDKs"): npm installs
# the exact versions of tests/sdk/package-lock.json without running install scripts, then the SDKs drive the emulator.
.PHONY: sdk
sdk: venv host-deps tests/sdk/node_modules/.installed ## Microsoft's Node SDKs (DPS service + device + TPM client, IoT Hub service) against the emulator
	pytest -q tests/sdk $(PYTEST_ARGS)

tests/sdk/node_modules/.installed: tests/sdk/package-lock.json
	npm ci --prefix tests/sdk --ignore-scripts --no-audit --no-fund
	touch $@

# The fault matrix (docs/reliability.md): DPS faults, killed writes, read-only/full filesystems, secrets, fuzzing.
reliability: venv ## the fault matrix: DPS faults, killed writes, full/read-only filesystems, fuzzing
	pytest -q tests/reliability $(PYTEST_ARGS)

# Day two (docs/fleet.md "Day two"): renew, replace, CA rollover and the fleet report, end to end on a simulated fleet
# against the DPS emulator.
.PHONY: daytwo
daytwo: venv ## renew, replace, revoke, CA rollover, fleet report end to end (simulated fleet)
	pytest -q tests/daytwo $(PYTEST_ARGS)

# The fleet report page (docs/fleet.md) in headless chromium, at 1,000 devices: sorting, filters, the expiry chart,
# no wrapping. chromium comes from tests/containers/install-host-deps.sh.
.PHONY: report
report: venv host-deps ## the fleet report page in headless chromium, at 1,000 devices
	pytest -q tests/report $(PYTEST_ARGS)

# Container targets (DESIGN.md §7): host packages, then locally built Debian 12 and 13 device images (amd64 and
# emulated arm64), reached over SSH as pi with sudo. Both steps skip what is already there.
images: host-deps ## install podman & co. and build the Debian 12/13 device images (amd64 + arm64)
	tests/containers/build-images.sh

containers: venv images ## the device images, and the modules over SSH as pi with sudo
	pytest -q tests/containers $(PYTEST_ARGS)

# No prerun (see extensions/molecule/smoke/molecule.yml): the collection comes from .collections.
molecule: venv images ## every molecule scenario against container targets
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.collections scripts/molecule-all.sh

test: lint sanity unit integration sdk reliability daytwo report bench-smoke containers bench-smoke-podman bench-smoke-ssh molecule awx
	@echo "make test: all suites passed"

# AWX / Automation Platform (issue 16, docs/awx.md): the built tarball installed offline and run from the install,
# the credential types, provision.yml as 4 concurrent slices, concurrent enrollment writes, and the execution
# environment built with ansible-builder (podman; the base comes from `make images`) and run with ansible-runner.
.PHONY: awx
awx: venv images ## the built collection, credential types, job slices, execution environment
	pytest -q tests/awx $(PYTEST_ARGS)

# The main job on an embedded default: a container fleet + the local DPS emulator, end to end.
demo: venv ## provision a small container fleet against the local DPS emulator
	scripts/demo.sh

# Benchmarks (issue 6): results are data in bench/results, the write-up is docs/benchmarks.md.
# bench-smoke runs the harness on 3 devices so it cannot rot; it is not a timed test.
# `make bench` = the simulated fleet matrix, the same fleet as containers driven by the podman connection and
# reached over SSH + sudo (the connection cost users pay), C at 150 and 1,000 devices in one run (the scaling
# target), and the DPS client alone against the emulator.
BENCH_ARGS ?= --sizes 10,150 --key-types ec-p256,rsa-4096 --repeats 3
BENCH_PODMAN_ARGS ?= --target podman --sizes 10 --key-types ec-p256 --repeats 3
BENCH_SSH_ARGS ?= --target ssh --sizes 10 --key-types ec-p256 --repeats 3
BENCH_SCALE_ARGS ?= --sizes 150,1000 --key-types ec-p256 --repeats 1 --methods C --no-dps
bench: venv images ## fleet benchmarks (A: openssl loop, B: community.crypto, C: this collection)
	python bench/run.py $(BENCH_ARGS)
	python bench/run.py $(BENCH_PODMAN_ARGS)
	python bench/run.py $(BENCH_SSH_ARGS)
	python bench/run.py $(BENCH_SCALE_ARGS)
	python bench/dps_profile.py --devices 20

bench-smoke: venv ## the benchmark harness on 3 simulated devices (not timed)
	python bench/run.py --sizes 3 --key-types ec-p256 --repeats 1 --out build/bench-smoke.json
	python bench/dps_profile.py --devices 1

bench-smoke-podman: venv images ## the benchmark harness on 2 containers (podman connection)
	python bench/run.py --target podman --sizes 2 --key-types ec-p256 --repeats 1 --out build/bench-smoke-podman.json

bench-smoke-ssh: venv images ## the benchmark harness on 2 containers over SSH + sudo
	python bench/run.py --target ssh --sizes 2 --key-types ec-p256 --repeats 1 --out build/bench-smoke-ssh.json

clean: ## remove build output
	rm -rf build tests/output .pytest_cache .ruff_cache
