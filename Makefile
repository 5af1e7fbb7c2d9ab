# Two commands on a fresh Debian machine: `make demo` and `make test`.
# Everything the tests and benchmarks need is installed here, not assumed.

CARGO ?= cargo
# The NBD clients the server is tested with: qemu-io, qemu-img (qemu-utils), nbdinfo,
# nbdcopy (libnbd-bin), nbdsh (python3-libnbd), fio; nbdkit and qemu-nbd are the peers
# of `make bench`. iproute2 makes the network namespaces the grid's streams run in as
# hosts of their own.
APT_PACKAGES := xfsprogs rsync time util-linux bsdutils coreutils strace \
	qemu-utils libnbd-bin python3-libnbd fio nbdkit iproute2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build deps s3s-fs moto azurite gcs-emulator vm-deps demo test lint bench crash clean

all: build

build:
	$(CARGO) build --release

# Installs only what is missing, so a warm machine pays nothing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing \
		|| { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }; \
	fi

# The S3-compatible server the object-store tests run against (cached once built).
s3s-fs:
	bash tests/s3/install-s3s-fs.sh

# moto's S3 server (pip, in a venv), for what s3s-fs does not implement: server-side
# encryption, storage classes and Object Lock, recorded per object.
moto:
	bash tests/s3/install-moto.sh

# Azurite, the Azure Storage emulator the az:// tests run against (npm; installs
# nodejs and npm first when they are missing).
azurite:
	bash tests/azure/install-azurite.sh

# gcp-storage-emulator (pip, in a venv), the Google Cloud Storage server the gs://
# tests run against, through tests/gcs/xml_api.py (the XML API object_store speaks).
gcs-emulator:
	bash tests/gcs/install-gcs-emulator.sh

# The VM the LVM, power-cut and kernel-NBD tests run in (qemu, Debian's kernel, lvm2,
# thin-provisioning-tools, nbd-client, virtme-ng): the host kernel has no
# device-mapper. Installs only what is missing.
vm-deps:
	bash tests/vm/install.sh

demo: build
	bash examples/demo.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# vm-deps before deps: installing Debian's qemu-system-x86 removes a qemu-utils of
# another version (one from backports, say), and deps then puts back the matching one.
# The tests run in two lanes side by side, each VM guest on one core (tests/lanes.sh).
test: vm-deps deps s3s-fs moto azurite gcs-emulator lint
	$(CARGO) test --all-targets --no-run
	CASCADE_REQUIRE_VM=1 CASCADE_REQUIRE_ROOT=1 CARGO=$(CARGO) bash tests/lanes.sh

# The power-cut harnesses at length (tests/power_cut.rs: snapshot cycles, then a
# split group, tests/power_cut/splitter.rs, then a live replica, tests/power_cut/live.rs;
# in one boot of the VM): more cycles, more
# random subsets of the un-flushed writes after each flush, every state tried, no VM
# time limit. Each prints how many states were tried and how many failed. `make test`
# runs the same harnesses over 50, 8 and 8 states, even spreads (so that the whole of
# `make test` stays within half an hour). CRASH_STATES caps the states tried (an even
# spread over the run) when every one would take too long.
CRASH_CYCLES ?= 10
CRASH_SUBSETS ?= 6
CRASH_SEED ?= 11
CRASH_STATES ?= 1000000
crash: vm-deps deps
	CASCADE_REQUIRE_VM=1 CASCADE_VM_TIMEOUT=0 CASCADE_CRASH_CYCLES=$(CRASH_CYCLES) \
	CASCADE_CRASH_SUBSETS=$(CRASH_SUBSETS) CASCADE_CRASH_SEED=$(CRASH_SEED) CASCADE_CRASH_STATES=$(CRASH_STATES) \
		$(CARGO) test --test power_cut -- --nocapture

# The benchmarks also compare with restic, upload to s3s-fs, time the limit program, and
# set the NBD server (the nbd-serve example) beside nbdkit and qemu-nbd.
BENCH_APT_PACKAGES := restic python3 openssl
bench: vm-deps deps s3s-fs build
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(BENCH_APT_PACKAGES)"
	$(CARGO) build --release --example multipart-put
	$(CARGO) build --release --example nbd-serve
	bash tests/bench/bench.sh $(BENCH)

clean:
	$(CARGO) clean
	rm -rf demo-out
