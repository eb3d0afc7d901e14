#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, checks formatting
# and lints, builds the binary once, runs the benchmark once quickly so it cannot rot, then every
# test (unit, property, end-to-end with ffprobe, hls-parser and hls.js in Chromium), a
# bounded fuzzing run (scripts/fuzz.sh), then the same for the SDI build (`--features sdi`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked --bins

export SLUICE_BIN="$PWD/target/debug/sluice"

# The benchmark must keep running; its figures are not judged here.
cargo run --locked --quiet -p sluice-e2e --bin bench -- --quick

cargo test --workspace --locked --all-targets

# Malformed input must never panic the server: each cargo-fuzz target (FLV/RTMP tags,
# MPEG-TS, parameter sets, HLS requests, the RTMP ingest) runs FUZZ_SECONDS (default
# 20) under AddressSanitizer; a crash fails the suite (needs the nightly toolchain;
# installs cargo-fuzz when missing). fuzz/ is its own workspace with its own target dir.
scripts/fuzz.sh

# SDI capture (the `sdi` feature, GStreamer): lints, unit tests (the real DeckLink
# element fails cleanly without a card; a simulated port encodes H.264 and AAC), and the
# end-to-end test with a simulated port. Built last: it replaces target/debug/sluice.
cargo clippy --locked -p sluice --features sdi --all-targets -- -D warnings
cargo build --locked -p sluice --features sdi --bins
cargo test --locked -p sluice --features sdi --lib --bins
cargo test --locked -p sluice-e2e --features sdi --test sdi
