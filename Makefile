# Two commands for a new user:
#   make test   install what is missing, build, run the whole test suite
#   make demo   install what is missing, build, run the main job
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test test-unit test-asan demo format format-check install clean

all: build

deps:
	@tools/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The whole suite, then the unit tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer.
test: build format-check
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 900
	$(MAKE) test-asan

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L unit

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLOCKSTEP_SANITIZE=ON \
	  -DLOCKSTEP_CUDA=OFF -DLOCKSTEP_BUILD_EXAMPLES=OFF -DLOCKSTEP_BUILD_BENCH=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS) -L unit

demo: build
	tools/demo.sh $(BUILD)

format:
	git ls-files '*.h' '*.cc' '*.cu' | xargs clang-format -i

format-check: deps
	tools/check-format.sh

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
