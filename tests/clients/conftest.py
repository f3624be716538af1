"""Starts one real `inferd serve` on free ports for the client tests.

The binary is the release build that `scripts/test.sh` makes first (or
$INFERD_BIN); the model repository is tests/models, with real ONNX Runtime.
"""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def inferd():
    binary = os.environ.get("INFERD_BIN", str(ROOT / "target" / "release" / "inferd"))
    process = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
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


# Triton's model configuration of two_io, as (name, data_type, dims) per
# tensor. Every dimension 0 of two_io is free, so inferd batches it (64 rows by
# default) and, as Triton does when max_batch_size > 0, leaves the batch
# dimension out of dims.
TWO_IO_CONFIG = {
    "max_batch_size": 64,
    "input": [("x", "TYPE_FP32", [3]), ("ids", "TYPE_INT64", [2])],
    "output": [("y", "TYPE_FP32", [1]), ("ids_out", "TYPE_INT64", [2])],
}


def wait_until(read, done, seconds=2.0):
    """Polls read() until done(value) holds, and returns the last value.

    Statistics may be recorded just after the answer goes out (Triton's own
    backends report them after sending responses), so a test that reads them
    right after an inference gives the server a moment.
    """
    deadline = time.monotonic() + seconds
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value
