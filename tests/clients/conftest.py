"""Starts one real `inferd serve` on free ports for the client tests.

The model repository is tests/models, with real ONNX Runtime; see
tests/inferd_process.py for the binary.
"""

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from inferd_process import serve  # noqa: E402


@pytest.fixture(scope="session")
def inferd():
    with serve("--model-repository", str(ROOT / "tests" / "models")) as addresses:
        yield addresses


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
