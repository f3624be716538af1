"""Runs a real `inferd serve` on free loopback ports for the Python test suites.

The binary is $INFERD_BIN (default target/release/inferd, the release build
that `scripts/test.sh` makes first).
"""

import contextlib
import json
import os
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serve(*args):
    """Starts `inferd serve ARGS` and yields its endpoints' addresses by name
    ("http", "grpc", "metrics") once its models are loaded; stops it after,
    and checks that it exited cleanly."""
    binary = os.environ.get("INFERD_BIN", str(ROOT / "target" / "release" / "inferd"))
    process = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
         "--metrics-port", "0", "--log-format", "json", *args],
        stderr=subprocess.PIPE, text=True)
    addresses = {}
    for line in process.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        message = event.get("message", "")
        if message.endswith(" endpoint listening"):
            addresses[message.split()[0]] = event["addr"]
        if message == "models loaded":
            break
    # Keep reading stderr so that the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    assert "http" in addresses and "grpc" in addresses, "inferd did not start"
    try:
        yield addresses
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
