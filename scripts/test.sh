#!/usr/bin/env bash
# Installs what the tests need and runs every test: unit tests, and the
# integration tests that start real servers with real ONNX Runtime.
#
# One release build serves every stage: the test binaries and the inferd
# binary that the process tests start are all built by the same command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo fmt --all -- --check

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --workspace --no-fail-fast
else
  cargo test --release --workspace --no-fail-fast
fi
