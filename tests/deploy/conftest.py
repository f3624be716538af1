"""Fixtures of the deploy tests: the image (built by deploy/build-image.sh
when missing), and inferd started as a container or as the binary, always on
loopback ports the system picks and always removed at the end of the test.
"""

import os
import subprocess
import uuid

import pytest

from support import DEPLOY, IMAGE, INFERD_BIN, MODELS_IMAGE, ROOT, Binary, Container, podman


@pytest.fixture(scope="session")
def image():
    """The image under test, built by deploy/build-image.sh when missing."""
    if podman("image", "exists", IMAGE, check=False).returncode != 0 or \
            podman("image", "exists", MODELS_IMAGE, check=False).returncode != 0:
        subprocess.run([str(DEPLOY / "build-image.sh")], check=True, cwd=ROOT,
                       env={**os.environ, "INFERD_BIN": str(INFERD_BIN)})
    return IMAGE


@pytest.fixture
def run_container(image):
    """Starts containers of the image and removes them at the end of the test.

    Every container runs as Kubernetes would run the manifests: root
    filesystem read-only with no tmpfs added, all capabilities dropped, no
    privilege escalation. `ports` are container ports, each published on
    127.0.0.1 at a port the system picks.
    """
    started = []

    def start(args=(), ports=(8000, 8001, 8002), env=None, mounts=(), user=None,
              image_ref=None):
        container = Container(f"inferd-test-{uuid.uuid4().hex[:12]}")
        command = ["run", "--detach", "--name", container.name,
                   "--read-only", "--read-only-tmpfs=false",
                   "--cap-drop=ALL", "--security-opt=no-new-privileges"]
        for port in ports:
            command += ["--publish", f"127.0.0.1::{port}"]
        for key, value in (env or {}).items():
            command += ["--env", f"{key}={value}"]
        for mount in mounts:
            command += ["--mount", mount]
        if user:
            command += ["--user", user]
        command += [image_ref or image, *args]
        started.append(container.name)
        podman(*command)
        for port in ports:
            mapped = podman("port", container.name, f"{port}/tcp").stdout.strip()
            container.ports[port] = int(mapped.rsplit(":", 1)[1])
        return container

    yield start
    for name in started:
        podman("rm", "--force", "--time", "0", name, check=False)


@pytest.fixture
def run_binary():
    """Starts the release binary on loopback; `metrics=True` adds --metrics-port."""
    started = []

    def start(*args, metrics=False, **env):
        binary = Binary(args, {"ORT_DISABLE_TELEMETRY": "1", **env}, metrics=metrics)
        started.append(binary)
        return binary

    yield start
    for binary in started:
        if binary.process.poll() is None:
            binary.process.kill()
            binary.process.wait()
