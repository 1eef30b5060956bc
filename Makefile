# membroker: the two commands of the quick start.
#   make run    install missing packages, build, start membrokerd with its defaults, serve a client
#   make test   install missing packages, build (normal and ASan+UBSan), run the whole suite (CTest)
#   make bench  the benchmarks: broker against bare nng and mmap, the CreateMalloc heap against
#               glibc malloc and mimalloc, CPython on broker memory (BENCHMARKS.md)
#   make deb    the Debian packages (debian/, dpkg-buildpackage), checked with lintian
#   make test-systemd  the packages installed and run under a real systemd (Debian 12 in nspawn)
#   make soak   workers, kills, hostile processes and restarts for SOAK_SECONDS (default 600)
BUILD      ?= build
BUILD_SAN  ?= build-sanitize
SOAK_SECONDS ?= 600
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build build-sanitize run test bench soak deb test-systemd format check-format clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-sanitize: deps
	@cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DMB_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD_SAN) -j $(JOBS)

run: build
	@scripts/run-demo.sh $(BUILD)

test: check-format build build-sanitize
	@echo "== test suite (RelWithDebInfo) =="
	@cd $(BUILD) && ctest --output-on-failure -j 2
	@echo "== test suite (AddressSanitizer + UndefinedBehaviorSanitizer) =="
	@cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2

bench: build
	@$(BUILD)/bench/mb_bench --json $(BUILD)/bench.json
	@$(BUILD)/bench/mb_allocbench
	@$(BUILD)/bench/mb_pybench

soak: build
	@$(BUILD)/tests/soak/mb_soak $(SOAK_SECONDS)

deb:
	@scripts/build-deb.sh $(BUILD)/deb

test-systemd: deb
	@scripts/test-systemd.sh $(BUILD)/deb

check-format: deps
	@scripts/check-format.sh

format: deps
	@scripts/check-format.sh --fix

clean:
	rm -rf $(BUILD) $(BUILD_SAN)
