# Catamount: `make run` serves the example app, `make test` runs every test.
# Both install what is missing first (script/bootstrap).

SHELL := /bin/bash
# One target dir outside the clone, shared by every build and kept between CI runs.
CARGO_TARGET_DIR ?= $(HOME)/.cache/catamount/target
export CARGO_TARGET_DIR
EXT := lib/catamount/catamount.so

.PHONY: all deps build build-bench run test test-rust test-ruby lint bench bench-quick clean
.PHONY: fuzz fuzz-brief

all: build

deps:
	@script/bootstrap

# The native extension, built in release mode and placed where lib/catamount.rb requires it.
build: deps
	cargo build --release --locked -p catamount-ext
	install -m 0755 $(CARGO_TARGET_DIR)/release/libcatamount.so $(EXT)

# The benchmark's load tools and reference server (bench/tools).
build-bench: deps
	cargo build --release --locked -p catamount-bench

run: build
	@echo "Serving examples/hello/config.ru on http://127.0.0.1:9292 (Ctrl-C to stop)"
	bin/catamount -b tcp://127.0.0.1:9292 examples/hello/config.ru

test: lint test-rust fuzz-brief test-ruby

lint: deps
	cargo fmt --all --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings
	script/fuzz --lint

# The pure-Rust crates (codec, config, server core). The extension needs a live Ruby: it is
# covered by the process-level tests.
test-rust: deps
	cargo test --release --locked --workspace --exclude catamount-ext

test-ruby: build build-bench
	ruby -w test/run.rb

# Coverage-guided fuzzing of the parsers (fuzz/; nightly and cargo-fuzz): every target for
# FUZZ_SECONDS, e.g. `make fuzz FUZZ_SECONDS=60`; one target: `script/fuzz head`.
FUZZ_SECONDS ?= 300
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) script/fuzz

# The brief run in `make test`: every target for 12 s (an hour of `make fuzz` finds more), from
# the checked-in seeds with a fixed libFuzzer seed, so a run tries the same inputs in the same
# order each time (a faster machine gets further along the same sequence): CI does not fail on
# a find that the next run would not reproduce. `make fuzz` explores: a new seed each run, and
# the corpus its earlier runs grew.
fuzz-brief: deps
	FUZZ_SECONDS=12 FUZZ_SEED=23 script/fuzz

# Catamount against Puma 5.6.5 (docs/benchmarks.md). BENCH_ARGS passes options to bench/run.rb,
# e.g. `make bench BENCH_ARGS="--only hello"`; MODE=taskset or MODE=setsid places the servers
# and wrk (bench/lib/placement.rb).
bench: build build-bench
	@script/bootstrap bench
	ruby -w bench/run.rb $(if $(MODE),--mode $(MODE)) $(BENCH_ARGS)

# A few seconds a scenario, for development.
bench-quick: build build-bench
	@script/bootstrap bench
	ruby -w bench/run.rb --quick $(if $(MODE),--mode $(MODE)) $(BENCH_ARGS)

# The soak (test/test_soak.rb): a cluster and a single-mode server under mixed load with
# restarts for SOAK_SECONDS (default 600; `make test` runs it for 60), memory, fds and threads
# sampled and printed.
.PHONY: soak
soak: build
	SOAK_SECONDS=$${SOAK_SECONDS:-600} ruby -w -Itest/support test/test_soak.rb -n /_soak$$/

clean:
	rm -f $(EXT)
	cargo clean
