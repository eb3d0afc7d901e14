#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, checks formatting
# and lints, builds the binary once, runs the benchmark once quickly so it cannot rot, then every
# test (unit, property, end-to-end with ffprobe, hls-parser and hls.js in Chromium).
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
