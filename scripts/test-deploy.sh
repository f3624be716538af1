#!/usr/bin/env bash
# Tests the deploy files: builds the image with deploy/build-image.sh from the
# release binary that is already built (INFERD_BIN, default
# target/release/inferd; scripts/test.sh builds it first), then runs
# tests/deploy with pytest: the image under podman, the KServe runtime in each
# model layout, and the validation of every manifest and of the Helm chart.
#
# Installs what it needs: the Debian packages through build-image.sh, the
# Python packages of tests/deploy/requirements.txt into .venv-deploy/.
# Runs as root on this project's machines (apt-get, rootful podman).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export INFERD_BIN=${INFERD_BIN:-target/release/inferd}
if [ ! -x "$INFERD_BIN" ]; then
  echo "test-deploy: $INFERD_BIN is missing; build it with cargo build --release --locked" >&2
  exit 1
fi

scripts/setup.sh
if [ ! -x .venv-deploy/bin/python ]; then
  python3 -m venv .venv-deploy
fi
.venv-deploy/bin/pip install --quiet --disable-pip-version-check -r tests/deploy/requirements.txt

deploy/build-image.sh
.venv-deploy/bin/python -m pytest tests/deploy -q --tb=short "$@"
