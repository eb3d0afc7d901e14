#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, checks formatting
# and lints, builds the binary once, runs the benchmark once quickly so it cannot rot, then every
# test (unit, property, end-to-end with ffprobe, hls-parser and hls.js in Chromium), a
# bounded fuzzing run (scripts/fuzz.sh), then the same for the SDI build (`--features sdi`).
set -euo pipefail
cd "$(dirname "$0")/.."

# What is left on the disk, at each step: a full disk shows where it filled.
step() {
    echo "== $1 ($(df -h --output=avail . | tail -1 | tr -d ' ') free)"
}

# CI builds once from a fresh clone: incremental-compilation caches (gigabytes) would
# never be read again.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi

step "installing test dependencies"
scripts/install-test-deps.sh

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
step "building"
cargo build --workspace --locked --bins

export SLUICE_BIN="$PWD/target/debug/sluice"

# The benchmark must keep running; its figures are not judged here.
step "benchmark, quick"
cargo run --locked --quiet -p sluice-e2e --bin bench -- --quick

step "tests"
cargo test --workspace --locked --all-targets

# Malformed input must never panic the server: each cargo-fuzz target (FLV/RTMP tags,
# MPEG-TS, parameter sets, HLS requests, the RTMP ingest) runs FUZZ_SECONDS (default
# 20) under AddressSanitizer; a crash fails the suite (needs the nightly toolchain;
# installs cargo-fuzz when missing). fuzz/ is its own workspace with its own target dir.
step "fuzzing"
scripts/fuzz.sh
# The sanitizer builds are not needed again in CI; their gigabytes go before the SDI build.
if [ "${CI:-}" = true ]; then
    rm -rf fuzz/target
fi

# SDI capture (the `sdi` feature, GStreamer): lints, unit tests (the real DeckLink
# element fails cleanly without a card; a simulated port encodes H.264 and AAC), and the
# end-to-end test with a simulated port. Built last: it replaces target/debug/sluice.
step "SDI build"
cargo clippy --locked -p sluice --features sdi --all-targets -- -D warnings
cargo build --locked -p sluice --features sdi --bins
cargo test --locked -p sluice --features sdi --lib --bins
cargo test --locked -p sluice-e2e --features sdi --test sdi
step "done"
