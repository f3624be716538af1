"""Starts one real `inferd serve` with the bundled model, and one headless
Chromium, for the status page's browser test.

With no --model-repository inferd serves the bundled clinical-risk model;
see tests/inferd_process.py for the binary.
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from inferd_process import serve  # noqa: E402

# Chromium on a machine with no internet: without the background-networking
# flags it keeps trying to reach Google's hosts.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900",
]


@pytest.fixture(scope="session")
def inferd():
    with serve() as addresses:
        yield f"http://{addresses['http']}"


@pytest.fixture(scope="session")
def browser():
    with tempfile.TemporaryDirectory(prefix="inferd-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        service = Service(executable_path=os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
        driver = webdriver.Chrome(service=service, options=options)
        yield driver
        driver.quit()
