# Two commands for a new user:
#   make test   install what is missing, build, run the whole test suite
#   make demo   install what is missing, build, run the main job
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 45
FUZZ_TARGETS := checkpoint_metadata_fuzz channel_line_fuzz hostfile_fuzz
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test test-unit test-asan test-tsan test-fuzz demo format format-check install clean

all: build

deps:
	@tools/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Clang's thread-safety analysis of the locking, the whole suite, then the
# unit tests again under AddressSanitizer and UndefinedBehaviorSanitizer,
# and under ThreadSanitizer; then the parsers of untrusted input under libFuzzer.
test: build format-check
	tools/check-thread-safety.sh $(BUILD)
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 900
	$(MAKE) test-asan
	$(MAKE) test-tsan
	$(MAKE) test-fuzz

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L unit

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLOCKSTEP_SANITIZE=ON \
	  -DLOCKSTEP_CUDA=OFF -DLOCKSTEP_BUILD_EXAMPLES=OFF -DLOCKSTEP_BUILD_BENCH=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS) -L unit

# The unit tests under ThreadSanitizer (the monitor thread, the heartbeat
# client's watcher, the plan simulation's workers), and the multi-rank tests
# labelled threads (the collectives' communication, completion and watchdog
# threads, the checkpoint writer and retention). Reports from third-party
# libraries are suppressed in tests/tsan.supp, each with its reason.
test-tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOCKSTEP_SANITIZE=thread \
	  -DLOCKSTEP_CUDA=OFF -DLOCKSTEP_BUILD_EXAMPLES=OFF -DLOCKSTEP_BUILD_BENCH=OFF
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --test-dir $(TSAN_BUILD) --output-on-failure -j $(JOBS) -L '^(unit|threads)$$'

# libFuzzer (clang, with ASan and UBSan) on the parsers of untrusted input:
# metadata.json, the heartbeat channel's lines, hostfiles. The seed corpora
# run first as ctests; then each target fuzzes a copy of its corpus for
# FUZZ_SECONDS. A crash, a sanitizer report, an input slower than 10 s or
# more than 2 GiB of memory fails; the input is left in $(FUZZ_BUILD)/.
test-fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DLOCKSTEP_BUILD_FUZZ=ON -DLOCKSTEP_BUILD_TESTS=OFF -DLOCKSTEP_CUDA=OFF \
	  -DLOCKSTEP_BUILD_EXAMPLES=OFF -DLOCKSTEP_BUILD_BENCH=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target lockstep_fuzz
	ctest --test-dir $(FUZZ_BUILD) --output-on-failure -L fuzz
	@for target in $(FUZZ_TARGETS); do \
	  corpus=$(FUZZ_BUILD)/corpus/$$target; log=$(FUZZ_BUILD)/$$target.log; \
	  rm -rf $$corpus && mkdir -p $$corpus && cp fuzz/corpus/$$target/* $$corpus/ && \
	  echo "fuzz: $$target for $(FUZZ_SECONDS) s (log: $$log)" && \
	  if ! $(FUZZ_BUILD)/fuzz/$$target -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	      -rss_limit_mb=2048 -artifact_prefix=$(FUZZ_BUILD)/$$target- $$corpus >$$log 2>&1; then \
	    tail -n 40 $$log; echo "fuzz: $$target failed; the input is in $(FUZZ_BUILD)/"; exit 1; \
	  fi; \
	  grep '^Done' $$log; \
	done

demo: build
	tools/demo.sh $(BUILD)

format:
	git ls-files '*.h' '*.cc' '*.cu' | xargs clang-format -i

format-check: deps
	tools/check-format.sh

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
