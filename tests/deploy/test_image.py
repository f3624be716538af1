"""The image that deploy/build-image.sh builds: small, labelled, without a
shell, running inferd as an unprivileged PID 1 on a read-only root, giving
the same answers as the binary run directly, ready quickly, and stopping
cleanly after answering what was in flight.
"""

import http.client
import json
import shutil
import subprocess
import tarfile
import threading
import time
import tomllib

import pytest
import requests

from support import (IMAGE, ROOT, VERSION, grpc_health, json_log_events, podman,
                     prometheus_samples, risk_request, v2_request, wait_http)

ARCHIVE = ROOT / "target" / "image" / f"inferd-{VERSION}.tar"
MAX_SIZE = 80_000_000


def report(capsys, line):
    """Prints past pytest's capture, for the figures the run should show."""
    with capsys.disabled():
        print(f"\n[deploy] {line}")


def test_image_is_under_80_mb(image, capsys):
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    report(capsys, f"image {image}: {size / 1e6:.1f} MB")
    assert size < MAX_SIZE


def test_image_carries_oci_labels_from_cargo_toml(image):
    package = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == package["version"]
    assert labels["org.opencontainers.image.source"] == package["repository"]
    assert labels["org.opencontainers.image.licenses"] == package["license"]
    assert len(labels["org.opencontainers.image.revision"]) == 40


def test_image_runs_inferd_serve_as_pid_1_with_models_at_models(image):
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["/opt/inferd/inferd"]
    assert config["Cmd"] == ["serve", "--model-repository", "/models"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp"}


def test_image_has_no_shell(image):
    result = podman("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "true", check=False)
    assert result.returncode != 0


def test_archive_is_a_docker_archive_of_the_image(image):
    with tarfile.open(ARCHIVE) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
    assert [m["RepoTags"] for m in manifest] == [[IMAGE]]
    if shutil.which("skopeo"):
        inspected = json.loads(subprocess.run(
            ["skopeo", "inspect", "--config", f"docker-archive:{ARCHIVE}"],
            capture_output=True, text=True, check=True).stdout)
        assert inspected["config"]["Entrypoint"] == ["/opt/inferd/inferd"]


def test_container_runs_as_the_unprivileged_user(run_container):
    container = run_container()
    wait_http(container.url(8000, "/v2/health/ready"))
    pid = container.inspect()["State"]["Pid"]
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    assert status["Uid"].split() == ["10001"] * 4
    assert status["Gid"].split() == ["10001"] * 4
    assert open(f"/proc/{pid}/cmdline").read().split("\0")[:2] == ["/opt/inferd/inferd", "serve"]


def test_container_on_a_read_only_root_answers_like_the_binary(run_container, run_binary):
    container = run_container()
    binary = run_binary()
    wait_http(container.url(8000, "/v2/health/ready"))

    for path, body in [("/predict/risk", risk_request()),
                       ("/v2/models/clinical-risk/infer", v2_request())]:
        from_container = requests.post(container.url(8000, path), json=body, timeout=5)
        from_binary = requests.post(binary.url(path), json=body, timeout=5)
        assert from_container.status_code == from_binary.status_code == 200
        assert from_container.json() == from_binary.json()
    assert from_container.json()["outputs"][0]["data"] == [pytest.approx(0.9028676)]
    assert grpc_health(container.ports[8001]) == "SERVING"

    # ONNX Runtime's telemetry stays off (ORT_DISABLE_TELEMETRY in the image):
    # it would otherwise warn that it can write neither its device id nor reach
    # its upload endpoint.
    assert "telemetry" not in container.logs().lower()


def test_metrics_match_the_binary(run_container, run_binary):
    """Needs inferd's --metrics-port and GET /metrics.

    The same requests go to the container and to the binary; every sample
    that counts requests or describes models must then be equal. Samples of
    times, sizes and the process itself differ from run to run and are left
    out. Readiness is awaited from the logs, not by polling HTTP, so that
    both receive exactly the same requests.
    """
    env = {"INFERD_LOG_FORMAT": "json"}
    container = run_container(env=env)
    container.wait_log("models loaded")
    binary = run_binary(metrics=True)

    def exercise(post):
        for i in range(3):
            assert post("/predict/risk", risk_request(f"S-{i}")).status_code == 200
        assert post("/v2/models/clinical-risk/infer", v2_request()).status_code == 200
        assert post("/v2/models/clinical-risk/infer", {"inputs": []}).status_code == 400
        assert post("/v2/models/nope/infer", v2_request()).status_code == 404

    exercise(lambda p, b: requests.post(container.url(8000, p), json=b, timeout=5))
    exercise(lambda p, b: requests.post(binary.url(p), json=b, timeout=5))

    from_container = requests.get(container.url(8002, "/metrics"), timeout=5)
    from_binary = requests.get(binary.url("/metrics", port=binary.metrics), timeout=5)
    assert from_container.status_code == from_binary.status_code == 200

    def stable(samples):
        varying = ("second", "duration", "_us", "time", "byte", "memory", "uptime", "start")
        return {k: v for k, v in samples.items()
                if not k[0].startswith("process_") and not any(w in k[0] for w in varying)}

    container_samples = stable(prometheus_samples(from_container.text))
    binary_samples = stable(prometheus_samples(from_binary.text))
    assert container_samples, "no request-counting samples in /metrics"
    assert container_samples == binary_samples
    assert 3 in container_samples.values() or 4 in container_samples.values()


def test_container_start_to_ready_is_quick(run_container, capsys):
    start = time.monotonic()
    container = run_container(env={"INFERD_LOG_FORMAT": "json"})
    ready = wait_http(container.url(8000, "/v2/health/ready"), timeout=30)
    total = time.monotonic() - start

    # inferd's own part: from its first log line to "models loaded".
    events = json_log_events(container.logs())
    stamps = [e["timestamp"] for e in events if "timestamp" in e]
    loaded = next(e["timestamp"] for e in events if e.get("message") == "models loaded")
    inferd_ms = (parse_time(loaded) - parse_time(stamps[0])) * 1000
    report(capsys, f"start to ready: {total:.2f} s from `podman run` "
                   f"({total - ready:.2f} s until podman returned), "
                   f"{inferd_ms:.0f} ms inside inferd")
    assert total < 10


def parse_time(stamp):
    # RFC 3339 with nanoseconds, e.g. 2026-12-04T01:51:42.735253Z
    from datetime import datetime
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).timestamp() + float(f"0.{fraction or 0}")


def slow_repository(tmp_path):
    """tests/models/slow behind one single-threaded instance: each call takes
    15 to 50 milliseconds, so a burst of calls queues up behind the first."""
    repo = tmp_path / "slow-repo"
    (repo / "slow" / "1").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "models" / "slow" / "1" / "model.onnx", repo / "slow" / "1")
    (repo / "slow" / "config.toml").write_text(
        "[instance_group]\ncount = 1\nintra_op_threads = 1\n")
    for path in [repo, *repo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return repo


def test_podman_stop_answers_in_flight_requests_then_exits_0(run_container, tmp_path, capsys):
    grace = 10
    calls = 24
    container = run_container(args=["serve", "--model-repository", "/models"],
                              mounts=[f"type=bind,source={slow_repository(tmp_path)},"
                                      "destination=/models,readonly"])
    wait_http(container.url(8000, "/v2/health/ready"))
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1],
                                   "data": [3]}]})

    # Each caller sends its request on its own connection, then waits for the
    # answer; the stop comes once every request is sent and the first answered,
    # so that the rest are queued or running inside inferd.
    sent = threading.Semaphore(0)
    answered = threading.Event()
    answers = []

    def call():
        connection = http.client.HTTPConnection("127.0.0.1", container.ports[8000],
                                                timeout=grace)
        try:
            connection.request("POST", "/v2/models/slow/infer", body,
                               {"content-type": "application/json"})
            sent.release()
            response = connection.getresponse()
            answers.append((time.monotonic(), response.status, json.loads(response.read())))
        except (OSError, http.client.HTTPException) as e:
            sent.release()
            answers.append((time.monotonic(), None, repr(e)))
        finally:
            answered.set()
            connection.close()

    callers = [threading.Thread(target=call) for _ in range(calls)]
    for caller in callers:
        caller.start()
    for _ in range(calls):
        assert sent.acquire(timeout=grace)
    assert answered.wait(timeout=grace)
    stop_sent = time.monotonic()
    podman("stop", "--time", str(grace), container.name, timeout=grace + 30)
    stopped = time.monotonic()
    for caller in callers:
        caller.join()

    assert [a[1] for a in answers] == [200] * calls, answers
    assert all(a[2]["outputs"][0]["data"] == [9.0] for a in answers)
    in_flight = sum(at > stop_sent for at, _, _ in answers)
    report(capsys, f"podman stop: {in_flight} of {calls} requests answered after SIGTERM, "
                   f"stopped in {stopped - stop_sent:.2f} s (grace {grace} s)")
    assert in_flight >= calls // 2, f"only {in_flight} answers came after the stop"
    assert stopped - stop_sent < grace
    state = container.inspect()["State"]
    assert state["ExitCode"] == 0 and not state["OOMKilled"]
    assert "shutdown complete" in container.logs()
