# Two commands for a new user:
#   make test   install what is missing, build, run the whole test suite
#   make demo   install what is missing, build, run the main job
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test test-unit test-asan test-tsan demo format format-check install clean

all: build

deps:
	@tools/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Clang's thread-safety analysis of the locking, the whole suite, then the
# unit tests again under AddressSanitizer and UndefinedBehaviorSanitizer,
# and under ThreadSanitizer.
test: build format-check
	tools/check-thread-safety.sh $(BUILD)
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 900
	$(MAKE) test-asan
	$(MAKE) test-tsan

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L unit

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLOCKSTEP_SANITIZE=ON \
	  -DLOCKSTEP_CUDA=OFF -DLOCKSTEP_BUILD_EXAMPLES=OFF -DLOCKSTEP_BUILD_BENCH=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS) -L unit

# The unit tests under ThreadSanitizer: they run the monitor thread, the
# heartbeat client's watcher and the plan simulation's workers. Reports from
# third-party libraries are suppressed in tests/tsan.supp, each with its reason.
test-tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOCKSTEP_SANITIZE=thread \
	  -DLOCKSTEP_CUDA=OFF -DLOCKSTEP_BUILD_EXAMPLES=OFF -DLOCKSTEP_BUILD_BENCH=OFF
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --test-dir $(TSAN_BUILD) --output-on-failure -j $(JOBS) -L unit

demo: build
	tools/demo.sh $(BUILD)

format:
	git ls-files '*.h' '*.cc' '*.cu' | xargs clang-format -i

format-check: deps
	tools/check-format.sh

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)
