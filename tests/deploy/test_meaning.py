"""The manifests say things inferd does: every argument and INFERD_* variable
is one `inferd serve` accepts, every probe and every Service port reaches an
endpoint the image serves (asked of a running container started exactly as
the Deployment describes it), and the parts refer to each other correctly:
selectors, port names, the ConfigMap, the grace period against the drain.
"""

import pytest
import requests

from support import (CHART_VARIANTS, KSERVE, KUBERNETES, MODELS_IMAGE, grpc_health,
                     json_log_events, one_document, render_chart, serve_help, wait_http)

DEPLOYMENT = one_document(KUBERNETES / "deployment.yaml", "Deployment")
CONFIGMAP = one_document(KUBERNETES / "configmap.yaml", "ConfigMap")
SERVICE = one_document(KUBERNETES / "service.yaml", "Service")
RUNTIMES = [one_document(KSERVE / "servingruntime.yaml", "ServingRuntime"),
            one_document(KSERVE / "clusterservingruntime.yaml", "ClusterServingRuntime")]
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def container_of(deployment):
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def argument_problems(args, flags):
    problems = []
    if not args or args[0] != "serve":
        problems.append(f"arguments must start with the subcommand serve: {args}")
    for arg in args[1:]:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--") or flag not in flags:
            problems.append(f"{arg}: not a flag of inferd serve")
    return problems


def environment_problems(names, env):
    return [f"{n}: not a variable of inferd serve" for n in names
            if n.startswith("INFERD_") and n not in env]


def test_every_argument_and_variable_is_one_inferd_serve_accepts():
    flags, env = serve_help()
    assert "--model-repository" in flags and "INFERD_LOG_FORMAT" in env, "help not parsed"

    problems = argument_problems(container_of(DEPLOYMENT)["args"], flags)
    problems += environment_problems(CONFIGMAP["data"], env)
    for runtime in RUNTIMES:
        [container] = runtime["spec"]["containers"]
        problems += argument_problems(container["args"], flags)
        problems += environment_problems([e["name"] for e in container.get("env", [])], env)
    for variant, values in CHART_VARIANTS.items():
        docs = render_chart(values)
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        configmap = next(d for d in docs if d["kind"] == "ConfigMap")
        problems += [f"chart {variant}: {p}" for p in
                     argument_problems(container_of(deployment)["args"], flags)
                     + environment_problems(configmap["data"], env)]
    assert problems == []


def test_grace_period_outlasts_the_pre_stop_pause_and_the_drain():
    deployments = [(DEPLOYMENT, CONFIGMAP)]
    for values in CHART_VARIANTS.values():
        docs = render_chart(values)
        deployments.append((next(d for d in docs if d["kind"] == "Deployment"),
                            next(d for d in docs if d["kind"] == "ConfigMap")))
    for deployment, configmap in deployments:
        pod = deployment["spec"]["template"]["spec"]
        pause = container_of(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = int(configmap["data"]["INFERD_EXIT_TIMEOUT_SECS"])
        assert pod["terminationGracePeriodSeconds"] > pause + drain


def test_the_parts_of_the_deployment_refer_to_each_other():
    pod_labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]

    def selects_pods(selector):
        return all(pod_labels.get(k) == v for k, v in selector.items())

    assert selects_pods(DEPLOYMENT["spec"]["selector"]["matchLabels"])
    assert selects_pods(SERVICE["spec"]["selector"])
    pdb = one_document(KUBERNETES / "pdb.yaml", "PodDisruptionBudget")
    assert selects_pods(pdb["spec"]["selector"]["matchLabels"])
    hpa = one_document(KUBERNETES / "hpa.yaml", "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": DEPLOYMENT["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2 and DEPLOYMENT["spec"]["replicas"] >= 2

    container = container_of(DEPLOYMENT)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in SERVICE["spec"]["ports"]:
        assert port["targetPort"] in port_names, port
    for probe in PROBES:
        assert container[probe]["httpGet"]["port"] in port_names, probe
    annotations = DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port_names["metrics"]
    assert container["envFrom"] == [{"configMapRef": {"name": CONFIGMAP["metadata"]["name"]}}]

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in DEPLOYMENT["spec"]["template"]["spec"]["volumes"]}
    assert mounts.keys() == volumes.keys()
    model_dir = next(a.split("=", 1)[1] for a in container["args"]
                     if a.startswith("--model-repository="))
    assert mounts["models"]["mountPath"] == model_dir and mounts["models"]["readOnly"]


def test_deployment_and_kserve_runtimes_share_the_security_settings():
    pod = DEPLOYMENT["spec"]["template"]["spec"]
    deployment_settings = {**pod["securityContext"], **container_of(DEPLOYMENT)["securityContext"]}
    for runtime in RUNTIMES:
        [container] = runtime["spec"]["containers"]
        assert container["securityContext"] == deployment_settings, runtime["kind"]
        assert container["resources"] == container_of(DEPLOYMENT)["resources"]
    assert RUNTIMES[0]["spec"] == RUNTIMES[1]["spec"]


@pytest.fixture
def deployed(run_container):
    """The image started as the Deployment's container: its arguments, the
    ConfigMap's variables, its user, its ports, and the model image mounted
    where its volume goes (podman's image mount stands in for the
    Kubernetes image volume)."""
    container = container_of(DEPLOYMENT)
    pod = DEPLOYMENT["spec"]["template"]["spec"]
    [volume] = pod["volumes"]
    [mount] = container["volumeMounts"]
    assert volume["image"]["reference"] == MODELS_IMAGE
    return run_container(
        args=container["args"],
        env=CONFIGMAP["data"],
        ports=[p["containerPort"] for p in container["ports"]],
        mounts=[f"type=image,source={MODELS_IMAGE},destination={mount['mountPath']}"],
        user=f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}")


def container_port(name):
    return {p["name"]: p["containerPort"] for p in container_of(DEPLOYMENT)["ports"]}[name]


def test_every_probe_of_the_deployment_is_answered(deployed):
    container = container_of(DEPLOYMENT)
    for probe in PROBES:
        get = container[probe]["httpGet"]
        url = deployed.url(container_port(get["port"]), get["path"])
        wait_http(url, timeout=container[probe]["periodSeconds"] *
                  container[probe]["failureThreshold"])

    # The models came from the mounted image, not from the bundled copy.
    loaded = [e for e in json_log_events(deployed.logs()) if e.get("message") == "model loaded"]
    assert [e["model"] for e in loaded] == ["clinical-risk"]
    assert loaded[0]["source"].startswith("/models/clinical-risk/")


def test_the_services_http_and_grpc_ports_are_served(deployed):
    http = deployed.url(container_port("http"), "/v2/health/ready")
    wait_http(http)
    for port in SERVICE["spec"]["ports"]:
        target = container_port(port["targetPort"])
        if port["name"] == "http":
            assert requests.get(deployed.url(target, "/v2/health/live"), timeout=5).ok
        elif port["name"] == "grpc":
            assert port["appProtocol"] == "grpc"
            assert grpc_health(deployed.ports[target]) == "SERVING"


def test_the_metrics_port_serves_prometheus_metrics(deployed):
    """Needs inferd's --metrics-port (8002 by default) and GET /metrics."""
    wait_http(deployed.url(container_port("http"), "/v2/health/ready"))
    annotations = DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    url = deployed.url(int(annotations["prometheus.io/port"]), annotations["prometheus.io/path"])
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 200, f"GET {annotations['prometheus.io/path']}: {answer.text}"
    assert answer.headers["content-type"].startswith("text/plain")
