"""Starts one real `inferd serve` with the bundled model, and one headless
Chromium, for the status page's browser test.

The binary is $INFERD_BIN (default target/release/inferd); with no
--model-repository it serves the bundled clinical-risk model.
"""

import json
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]

# Chromium on a machine with no internet: without the background-networking
# flags it keeps trying to reach Google's hosts.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900",
]


@pytest.fixture(scope="session")
def inferd():
    binary = os.environ.get("INFERD_BIN", str(ROOT / "target" / "release" / "inferd"))
    process = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
         "--metrics-port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE, text=True)
    address = None
    for line in process.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == "http endpoint listening":
            address = event["addr"]
        if event.get("message") == "models loaded":
            break
    # Keep reading stderr so that the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    assert address, "inferd did not start"
    yield f"http://{address}"
    process.terminate()
    assert process.wait(timeout=30) == 0


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
