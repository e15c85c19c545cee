# Every target sets up what it needs; run as root on Debian 12.
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := redis-server redis-sentinel redis-tools python3-redis prometheus-redis-exporter prometheus-node-exporter nftables systemd dbus iproute2 util-linux procps psmisc zstd gzip python3-venv python3-pip debootstrap
STAMP  := $(VENV)/.setup-done

.PHONY: setup debian13-root lab test unit functional integration lint down bench

setup: $(STAMP)

$(STAMP): requirements.txt Makefile
	./lab/setup-machine.sh $(APT_PACKAGES)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

lab: setup
	$(PY) -m lab up

down: setup
	$(PY) -m lab down

# The Debian 13 root the lab's `lab: {os: debian13}` hosts boot from (lab/debian13.py): built
# once from the Debian mirror and cached, here rather than inside a test (tests talk to no
# network); a stamp lookup when it is there.
debian13-root: setup
	$(PY) -c 'from lab.debian13 import root_fs; root_fs()'

test: setup debian13-root
	$(PY) -m flake8 _pillar _modules _states _runners _utils _beacons _grains lab tests bench
	$(PY) -m pytest -n 2 --dist loadscope --no-loadscope-reorder tests

unit: setup
	$(PY) -m pytest tests/unit

functional: setup
	$(PY) -m pytest tests/functional

integration: setup debian13-root
	$(PY) -m pytest tests/integration

# Every bench/ script on the lab it needs (its own: `--name rbench`, subnet 10.213.45.0/24),
# each against a baseline measured in the same run; writes docs/BENCHMARKS.md. Not part of
# `make test` nor CI. BENCH="NAME ..." runs a subset, ROUNDS/SIZE_MIB/LAB_SIZE_MIB make it quicker.
bench: setup
	$(PY) bench/run.py $(if $(BENCH),--only "$(BENCH)") $(if $(ROUNDS),--rounds $(ROUNDS)) \
		$(if $(SIZE_MIB),--size-mib $(SIZE_MIB)) $(if $(LAB_SIZE_MIB),--lab-size-mib $(LAB_SIZE_MIB)) \
		$(if $(NOTE),--note "$(NOTE)")
