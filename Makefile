# The two commands a newcomer runs: `make demo` and `make test`.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all build deps test test-quick demo host-demo enclave-demo clean fuzz bench

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Everything, including the long tests (Linux bzImage decompressor under emulated CPL0).
test: deps build
	ctest --test-dir $(BUILD) --output-on-failure -j 2 --timeout 1200

# Short loop for development: leaves out tests labelled "long".
test-quick: build
	ctest --test-dir $(BUILD) --output-on-failure -j 2 -LE long

# A one-host region (etcd, a host, azote-region) driven by the real aws CLI; HOSTS=3 for more.
demo: deps build
	@scripts/region-demo.sh $(BUILD) --hosts $(or $(HOSTS),1)

# One host through the azote CLI: its processes' jails, attestation, NitroTPM.
host-demo: deps build
	@scripts/demo.sh $(BUILD)

# The enclave story (issue 12): a key released to the right enclave only (as root).
enclave-demo: deps build
	@scripts/enclave-demo.sh $(BUILD)

bench: deps build
	bench/run.sh $(BUILD)

fuzz: build
	cmake --build $(BUILD) --target fuzz_loader

clean:
	rm -rf $(BUILD)
