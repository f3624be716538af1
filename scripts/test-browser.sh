#!/usr/bin/env bash
# The status page's browser test: loads GET / of a real inferd in headless
# Chromium and scores a record through the page's form (tests/browser).
#
# Installs Debian's chromium and chromium-driver with apt-get when missing
# (so it runs as root there), keeps Selenium in its own virtual environment
# (.venv-browser), and tests ${INFERD_BIN:-target/release/inferd}, which
# must be built first. Writes a screenshot to target/status-page.png.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
fi

if [ ! -x .venv-browser/bin/python ]; then
  python3 -m venv .venv-browser
fi
.venv-browser/bin/pip install --quiet -r tests/browser/requirements.txt

export INFERD_BIN="${INFERD_BIN:-target/release/inferd}"
# Selenium must use the driver it is given, never fetch one.
export SE_OFFLINE=true
mkdir -p target
.venv-browser/bin/python -m pytest tests/browser -q
