#!/usr/bin/env bash
# Installs what the tests need and runs every test: unit tests, the
# integration tests that start real servers with real ONNX Runtime, and the
# tests that drive inferd with Triton's own Python client.
#
# One release build serves every stage: the test binaries, and the inferd
# binary that the process tests and the Python client tests start, are all
# built by the same cargo command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
# The in-process tests load ONNX Runtime without inferd's main, which turns
# ONNX Runtime's own telemetry off; do it for them too.
export ORT_DISABLE_TELEMETRY=1
cargo fmt --all -- --check

if [ ! -x .venv-clients/bin/python ]; then
  python3 -m venv .venv-clients
fi
.venv-clients/bin/pip install --quiet -r tests/clients/requirements.txt

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --workspace --no-fail-fast
else
  cargo test --release --workspace --no-fail-fast
fi

INFERD_BIN=target/release/inferd .venv-clients/bin/python -m pytest tests/clients -q
# The container image, the Kubernetes, KServe and Helm files: built and
# checked with the same release binary.
INFERD_BIN=target/release/inferd scripts/test-deploy.sh

# The status page in headless Chromium (installed with apt when missing).
INFERD_BIN=target/release/inferd scripts/test-browser.sh
