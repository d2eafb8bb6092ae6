# Berry's two commands: `make run` and `make test`. Every target installs missing Debian
# packages first (scripts/install-deps), configures out of source under build/, then builds.
JOBS ?= 2
MAKEFLAGS += --no-print-directory
CONFIG ?=
CMAKE_COMMON := -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
# The test, sanitizer and fuzz trees carry line tables only (-g1): stack traces, sanitizer
# reports and profiles keep file:line, and the trees build about a quarter faster than with
# full debug information (README.md, "Build time"). Override with e.g. TEST_DEBUG_INFO=-g.
TEST_DEBUG_INFO ?= -g1

.PHONY: all deps run test test-asan test-tsan build-tsan fuzz build-fuzz bench bench-selection build-bench build-release build-test build-asan format tidy clean

all: build-release

deps:
	@scripts/install-deps

build/release/CMakeCache.txt: | deps
	@cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBERRY_BUILD_TESTS=OFF $(CMAKE_COMMON) >/dev/null

build/test/CMakeCache.txt: | deps
	@cmake -S . -B build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 $(TEST_DEBUG_INFO) -DNDEBUG" $(CMAKE_COMMON) >/dev/null

build/asan/CMakeCache.txt: | deps
	@cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_CXX_FLAGS_DEBUG="$(TEST_DEBUG_INFO)" -DBERRY_SANITIZE=ON -DBERRY_BUILD_BENCH=OFF $(CMAKE_COMMON) >/dev/null

build/tsan/CMakeCache.txt: | deps
	@scripts/install-deps --tsan
	@cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 $(TEST_DEBUG_INFO) -DNDEBUG" -DBERRY_TSAN=ON -DBERRY_BUILD_BENCH=OFF $(CMAKE_COMMON) >/dev/null

build-release: deps build/release/CMakeCache.txt
	@cmake --build build/release -j$(JOBS)

# The libFuzzer targets (tests/fuzz) need clang; only they and what they link are built there.
build/fuzz/CMakeCache.txt: | deps
	@scripts/install-deps --fuzz
	@CC=clang-14 CXX=clang++-14 cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 $(TEST_DEBUG_INFO) -DNDEBUG" \
	  -DBERRY_FUZZ=ON -DBERRY_BUILD_TESTS=OFF -DBERRY_BUILD_BENCH=OFF $(CMAKE_COMMON) >/dev/null

build-test: deps build/test/CMakeCache.txt
	@cmake --build build/test -j$(JOBS)

build-asan: deps build/asan/CMakeCache.txt
	@cmake --build build/asan -j$(JOBS)

build-tsan: deps build/tsan/CMakeCache.txt
	@scripts/install-deps --tsan
	@cmake --build build/tsan -j$(JOBS)

# Serves on examples/config.toml if it exists, else on the demo config with the mock provider.
run: build-release
	@scripts/run-demo $(CONFIG)

test: build-test
	@cd build/test && ctest --output-on-failure -j$(JOBS) --timeout 300

test-asan: build-asan
	@cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(JOBS) --timeout 600

# The suite under ThreadSanitizer, but for the npm SDK tests (node is not built for it); the
# first race fails the test it happens in (README.md, "ThreadSanitizer"). Every process gets
# the absl synchronisation shim preloaded (tests/support/tsan_absl_sync.cc); tests/tsan.supp
# names what TSan still cannot see through.
test-tsan: build-tsan
	@cd build/tsan && LD_PRELOAD=$(CURDIR)/build/tsan/tests/support/libberry_tsan_absl_sync.so \
	  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --output-on-failure -j$(JOBS) --timeout 900 -E '_sdk\.' $(TSAN_CTEST_ARGS)

# Every fuzz target for FUZZ_SECONDS each on its seeds (README.md, "Reliability").
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
build-fuzz: deps build/fuzz/CMakeCache.txt
	@scripts/install-deps --fuzz
	@cmake --build build/fuzz -j$(JOBS) --target berry_fuzzers

fuzz: build-fuzz
	@scripts/run-fuzzers build/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The relay benchmark against nginx (and Portkey when npm can install it): bench/README.md.
bench: build-bench
	@bench/run-proxy $(BENCH_ARGS)

bench-selection: build-bench
	@bench/run-selection

build-bench: deps
	@scripts/install-deps --bench
	@cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBERRY_BUILD_TESTS=OFF $(CMAKE_COMMON) >/dev/null
	@cmake --build build/release -j$(JOBS)

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

# Fails on any finding (WarningsAsErrors in .clang-tidy); about 10 minutes on 2 cores.
tidy: build-test
	@git ls-files 'common/*.cc' 'data-plane/*.cc' 'control-plane/*.cc' | \
	  xargs -P$(JOBS) -n4 clang-tidy -p build/test --quiet

clean:
	@rm -rf build
