"""The KServe runtime, exercised: the image started with exactly the
container arguments, environment, user and ports of deploy/kserve/'s
ServingRuntime ({{.Name}} filled in with the InferenceService's name, as
KServe does), with a model folder at /mnt/models in each layout KServe's
storage initializer leaves, answers v2 inference under that name over REST
and reports the model ready over gRPC.
"""

import shutil

import pytest
import requests

from support import (KSERVE, RISK_SCORE, ROOT, grpc_model_ready, one_document, v2_request,
                     wait_http)

RUNTIME = one_document(KSERVE / "servingruntime.yaml", "ServingRuntime")
[CONTAINER] = RUNTIME["spec"]["containers"]
SERVICE = one_document(KSERVE / "inferenceservice.yaml", "InferenceService")
GRPC_SERVICE = one_document(KSERVE / "inferenceservice-grpc.yaml", "InferenceService")
MODEL = ROOT / "models" / "clinical-risk" / "1" / "model.onnx"

# Where KServe sends traffic when the runtime declares no port: 8080.
KSERVE_DEFAULT_HTTP_PORT = 8080

# What KServe's storage initializer may leave at /mnt/models for an ONNX model.
LAYOUTS = {
    "triton-repository": "exported-risk/1/model.onnx",
    "version-folders": "1/model.onnx",
    "bare-model": "model.onnx",
}


def flag_value(args, flag):
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"{flag}="))


def runtime_ports():
    """The container ports KServe routes to: the runtime's declared ports, or
    KServe's default; plus the gRPC port a grpc-v2 InferenceService declares."""
    http = [p["containerPort"] for p in CONTAINER.get("ports", [])] or [KSERVE_DEFAULT_HTTP_PORT]
    [h2c] = GRPC_SERVICE["spec"]["predictor"]["model"]["ports"]
    assert h2c["name"] == "h2c"
    return http[0], h2c["containerPort"]


def test_runtime_ports_are_the_ones_inferd_is_told_to_listen_on():
    http, grpc = runtime_ports()
    assert int(flag_value(CONTAINER["args"], "--http-port")) == http == 8080
    assert int(flag_value(CONTAINER["args"], "--grpc-port")) == grpc == 9000
    assert flag_value(CONTAINER["args"], "--model-repository") == "/mnt/models"
    for probe in ("readinessProbe", "livenessProbe"):
        assert CONTAINER[probe]["httpGet"]["port"] == http


def test_inference_services_select_this_runtime():
    formats = {f["name"]: f for f in RUNTIME["spec"]["supportedModelFormats"]}
    for service in (SERVICE, GRPC_SERVICE):
        model = service["spec"]["predictor"]["model"]
        assert model["runtime"] == RUNTIME["metadata"]["name"]
        assert formats[model["modelFormat"]["name"]]["autoSelect"] is True
        assert model["protocolVersion"] in RUNTIME["spec"]["protocolVersions"]


def model_folder(tmp_path, layout):
    folder = tmp_path / layout
    target = folder / LAYOUTS[layout]
    target.parent.mkdir(parents=True)
    shutil.copy(MODEL, target)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def start_runtime(run_container, folder, name):
    """The runtime's container as KServe would start it for InferenceService `name`."""
    args = [a.replace("{{.Name}}", name) for a in CONTAINER["args"]]
    env = {e["name"]: e["value"].replace("{{.Name}}", name) for e in CONTAINER.get("env", [])}
    security = CONTAINER["securityContext"]
    metrics_port = int(RUNTIME["spec"]["annotations"]["prometheus.kserve.io/port"])
    return run_container(
        args=args, env=env, ports=[*runtime_ports(), metrics_port],
        user=f"{security['runAsUser']}:{security['runAsGroup']}",
        mounts=[f"type=bind,source={folder},destination=/mnt/models,readonly"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_runtime_serves_the_layout_under_the_inference_services_name(
        run_container, tmp_path, layout):
    name = SERVICE["metadata"]["name"]
    http, grpc = runtime_ports()
    container = start_runtime(run_container, model_folder(tmp_path, layout), name)

    for probe in ("readinessProbe", "livenessProbe"):
        get = CONTAINER[probe]["httpGet"]
        wait_http(container.url(get["port"], get["path"]), timeout=30)
    assert requests.get(container.url(http, f"/v2/models/{name}/ready"), timeout=5).ok

    answer = requests.post(container.url(http, f"/v2/models/{name}/infer"),
                           json=v2_request(), timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_name"] == name
    assert answer.json()["outputs"][0]["data"] == [pytest.approx(RISK_SCORE)]
    assert grpc_model_ready(container.ports[grpc], name)

    # Served under the InferenceService's name only, not the folder's.
    folder_name = LAYOUTS[layout].split("/")[0] if layout == "triton-repository" else layout
    assert requests.get(container.url(http, f"/v2/models/{folder_name}/ready"),
                        timeout=5).status_code != 200


def test_runtime_serves_the_grpc_inference_service_under_its_name(run_container, tmp_path):
    name = GRPC_SERVICE["metadata"]["name"]
    _, grpc = runtime_ports()
    container = start_runtime(run_container, model_folder(tmp_path, "version-folders"), name)
    wait_http(container.url(KSERVE_DEFAULT_HTTP_PORT, "/v2/health/ready"))
    assert grpc_model_ready(container.ports[grpc], name)
    assert not grpc_model_ready(container.ports[grpc], "clinical-risk")


def test_runtimes_prometheus_annotations_point_at_metrics(run_container, tmp_path):
    """Needs inferd's metrics endpoint on its default port 8002."""
    name = SERVICE["metadata"]["name"]
    container = start_runtime(run_container, model_folder(tmp_path, "bare-model"), name)
    wait_http(container.url(KSERVE_DEFAULT_HTTP_PORT, "/v2/health/ready"))
    annotations = RUNTIME["spec"]["annotations"]
    url = container.url(int(annotations["prometheus.kserve.io/port"]),
                        annotations["prometheus.kserve.io/path"])
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 200, answer.text
