"""Starts one real `inferd serve` on free ports for the client tests.

The binary is the release build that `scripts/test.sh` makes first (or
$INFERD_BIN); the model repository is tests/models, with real ONNX Runtime.
"""

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def inferd():
    binary = os.environ.get("INFERD_BIN", str(ROOT / "target" / "release" / "inferd"))
    process = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
         "--log-format", "json", "--model-repository", str(ROOT / "tests" / "models")],
        stderr=subprocess.PIPE, text=True)
    addresses = {}
    for line in process.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == "http endpoint listening":
            addresses["http"] = event["addr"]
        if event.get("message") == "grpc endpoint listening":
            addresses["grpc"] = event["addr"]
        if event.get("message") == "models loaded":
            break
    # Keep reading stderr so that the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    assert "grpc" in addresses, "inferd did not start"
    yield addresses
    process.terminate()
    assert process.wait(timeout=30) == 0


def reference(name):
    return json.loads((ROOT / "tests" / "fixtures" / "reference" / name).read_text())
