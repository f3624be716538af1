"""Helpers of the deploy tests: where the deploy files are, requests the
bundled model answers, podman containers and the release binary as handles,
and parsers for `inferd serve --help` and Prometheus' text format.

The binary is $INFERD_BIN (default target/release/inferd); the image is
localhost/inferd:<version in Cargo.toml>.
"""

import json
import os
import re
import socket
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import helm_python as helm
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KSERVE = DEPLOY / "kserve"
CHART = DEPLOY / "helm" / "inferd"
# KServe's CRDs, as the project's machines hold them in the shared folder:
# $KSERVE_CRDS if set, else the first of these that exists.
def _kserve_crds():
    if "KSERVE_CRDS" in os.environ:
        return Path(os.environ["KSERVE_CRDS"])
    places = [ROOT.parent / "shared" / "kserve-crds", Path("/work/shared/kserve-crds")]
    return next((p for p in places if p.is_dir()), places[-1])


KSERVE_CRDS = _kserve_crds()

# The newest Kubernetes that kubernetes-validate has schemas for.
KUBE_VERSION = "1.37.0"

VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
IMAGE = f"localhost/inferd:{VERSION}"
MODELS_IMAGE = f"localhost/inferd-models:{VERSION}"
INFERD_BIN = Path(os.environ.get("INFERD_BIN", ROOT / "target" / "release" / "inferd"))
if not INFERD_BIN.is_absolute():
    INFERD_BIN = ROOT / INFERD_BIN

# The README's example row and the score the bundled model gives it.
RISK_FEATURES = [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]
RISK_SCORE = 0.9028676


def risk_request(subject="S-001"):
    return {"subjectId": subject, "features": RISK_FEATURES}


def v2_request(request_id="r1"):
    return {"id": request_id,
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 10],
                        "data": RISK_FEATURES}]}


def yaml_documents(path):
    """The non-empty documents of a YAML file."""
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


def one_document(path, kind):
    docs = [doc for doc in yaml_documents(path) if doc["kind"] == kind]
    assert len(docs) == 1, f"{path}: expected one {kind}, found {len(docs)}"
    return docs[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def podman(*args, check=True, timeout=120):
    return subprocess.run(["podman", *args], capture_output=True, text=True,
                          check=check, timeout=timeout)


def wait_http(url, timeout=30.0, status=200):
    """Polls url until it answers `status`; returns the seconds it took."""
    start = time.monotonic()
    while True:
        try:
            if requests.get(url, timeout=1).status_code == status:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{url} did not answer {status} within {timeout} s")
        time.sleep(0.02)


def json_log_events(text):
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


class Container:
    """One detached podman container and the host ports its ports map to."""

    def __init__(self, name):
        self.name = name
        self.ports = {}

    def url(self, port, path=""):
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def logs(self):
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def inspect(self):
        return json.loads(podman("inspect", self.name).stdout)[0]

    def wait_log(self, message, timeout=30.0):
        """Waits for a JSON log line with this message (needs INFERD_LOG_FORMAT=json)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("message") == message for e in json_log_events(self.logs())):
                return
            if not self.inspect()["State"]["Running"]:
                break
            time.sleep(0.05)
        raise AssertionError(f"container never logged {message!r}:\n{self.logs()}")


class Binary:
    """The release binary started directly, for comparison with the image."""

    def __init__(self, args, env, metrics=False):
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.args = ["serve", "--host", "127.0.0.1", "--http-port", str(self.http),
                     "--grpc-port", str(self.grpc), "--log-format", "json", *args]
        if metrics:
            self.args += ["--metrics-port", str(self.metrics)]
        self.process = subprocess.Popen([str(INFERD_BIN), *self.args],
                                        env={**os.environ, **env},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        for line in self.process.stderr:
            events = json_log_events(line)
            if events and events[0].get("message") == "models loaded":
                break
        else:
            raise AssertionError(f"inferd {' '.join(self.args)} exited: {self.process.wait()}")
        # Drain stderr so that the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()

    def url(self, path, port=None):
        return f"http://127.0.0.1:{port or self.http}{path}"

    def stop(self):
        self.process.terminate()
        return self.process.wait(timeout=30)


def serve_help():
    """Long flags and environment variables that `inferd serve --help` lists."""
    text = subprocess.run([str(INFERD_BIN), "serve", "--help"], capture_output=True,
                          text=True, check=True).stdout
    flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", text, re.MULTILINE))
    env = set(re.findall(r"\[env:\s+([A-Z0-9_]+)=", text))
    return flags, env


def prometheus_samples(text):
    """Parses Prometheus' text format into {(name, labels): value}."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return samples


def grpc_health(port):
    """The status grpc.health.v1 gives for the whole server ("")."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def grpc_model_ready(port, name):
    """inference.GRPCInferenceService/ModelReady for `name`, without generated stubs.

    ModelReadyRequest is {string name = 1; string version = 2;} and
    ModelReadyResponse {bool ready = 1;} (proto/grpc_service.proto), small
    enough to encode by hand: a length-delimited field 1, and a varint field 1.
    """
    import grpc

    encoded = name.encode()
    assert len(encoded) < 128, "one-byte length prefix only"
    request = b"\x0a" + bytes([len(encoded)]) + encoded
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelReady")
        try:
            answer = call(request, timeout=5)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
    return answer == b"\x08\x01"


# Values that exercise each branch of the chart's templates.
CHART_VARIANTS = {
    "defaults": {},
    "pvc": {"models": {"source": "pvc", "pvc": {"claimName": "models", "subPath": "repo"}}},
    "init-container": {"models": {"source": "initContainer", "initContainer": {
        "image": "registry.example/fetch-models:1", "args": ["--to=/models"],
        "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}}}},
    "bundled": {"models": {"source": "bundled"}},
    "fixed-replicas": {"autoscaling": {"enabled": False}, "replicaCount": 3,
                       "podDisruptionBudget": {"enabled": False}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "extra-settings": {"config": {"extraEnv": {"INFERD_RISK_MODEL": "clinical-risk"}},
                       "extraArgs": ["--max-request-bytes=1048576"],
                       "podAnnotations": {"team": "clinical"},
                       "nodeSelector": {"kubernetes.io/arch": "amd64"}},
}


def render_chart(values=None, name="inferd"):
    """The chart's manifests as `helm template` gives them, parsed."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values=values or {}, name=name, namespace="default")
    docs = []
    for template, text in sorted(rendered.items()):
        if template.endswith(".txt"):
            continue
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs
