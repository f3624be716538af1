"""The deploy files are valid for whatever reads them, without a cluster.

yamllint over every YAML file; kubernetes-validate --strict (unknown fields
are errors) for Kubernetes 1.37; KServe's own CRD schemas for the KServe
resources, tightened the same way; Helm's lint for the chart; and the chart's
renderings, for the default values and for each model source, go through the
same validation. The chart's default rendering must be the plain manifests
of deploy/kubernetes/, so the two cannot drift apart.
"""

import copy
import functools
import subprocess
import sys

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from support import (CHART, CHART_VARIANTS, DEPLOY, KSERVE, KSERVE_CRDS, KUBE_VERSION,
                     KUBERNETES, VERSION, one_document, render_chart, yaml_documents)

KUBERNETES_FILES = sorted(KUBERNETES.glob("*.yaml"))
SERVICE_MONITOR_FILE = KUBERNETES / "prometheus-operator" / "servicemonitor.yaml"
KSERVE_FILES = sorted(KSERVE.glob("*.yaml"))
CRD_KINDS = {"ServiceMonitor", "ServingRuntime", "ClusterServingRuntime", "InferenceService"}

def validate_kubernetes(doc):
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_every_deploy_yaml_file_passes_yamllint():
    # Run from deploy/: the config's ignore patterns are relative to it.
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "--config-file", ".yamllint.yaml", "."],
        capture_output=True, text=True, cwd=DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_cli_passes_every_manifest_strictly():
    files = [*KUBERNETES_FILES, SERVICE_MONITOR_FILE, *KSERVE_FILES]
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--kubernetes-version",
         KUBE_VERSION, *map(str, files)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # Built-in kinds must pass; only the CRD kinds, checked against their own
    # schemas below, may be unknown to kubernetes-validate.
    for line in result.stdout.splitlines():
        assert line.startswith("INFO") or (
            line.startswith("WARN") and any(f"kind {k} " in line for k in CRD_KINDS)), line
    for path in KUBERNETES_FILES:
        assert f"INFO {path} passed" in result.stdout


@pytest.mark.parametrize("path", KUBERNETES_FILES, ids=lambda p: p.name)
def test_kubernetes_manifest_has_no_unknown_field(path):
    for doc in yaml_documents(path):
        validate_kubernetes(doc)


def test_strict_validation_rejects_an_unknown_field():
    deployment = one_document(KUBERNETES / "deployment.yaml", "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_kubernetes(broken)


def service_monitor_problems(monitor, service):
    """What a ServiceMonitor gets wrong about the Service it should scrape.

    No schema for the Prometheus operator's CRD is at hand, so this checks the
    fields that decide whether scraping works at all.
    """
    problems = []
    if monitor.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"apiVersion {monitor.get('apiVersion')}")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    labels = service["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in wanted.items()):
        problems.append(f"selector {wanted} does not match the Service's labels {labels}")
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        if endpoint.get("port") not in port_names:
            problems.append(f"endpoint port {endpoint.get('port')} is not a Service port")
        if endpoint.get("path") != "/metrics":
            problems.append(f"endpoint path {endpoint.get('path')}")
    return problems


def test_service_monitor_scrapes_the_services_metrics_port():
    monitor = one_document(SERVICE_MONITOR_FILE, "ServiceMonitor")
    service = one_document(KUBERNETES / "service.yaml", "Service")
    assert service_monitor_problems(monitor, service) == []


@functools.lru_cache
def strict_crd_schema(kind):
    """KServe's schema for `kind`, with unknown fields made errors.

    A cluster prunes unknown fields of a structural CRD schema silently, which
    hides typos; here every object that lists its properties also refuses any
    other, except where the schema says unknown fields are kept.
    """
    plural = {"ServingRuntime": "servingruntimes",
              "ClusterServingRuntime": "clusterservingruntimes",
              "InferenceService": "inferenceservices"}[kind]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((KSERVE_CRDS / f"serving.kserve.io_{plural}.yaml").read_text(), loader)
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])

    def tighten(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(schema)
    return f"{crd['spec']['group']}/{version['name']}", schema


def crd_errors(doc):
    api_version, schema = strict_crd_schema(doc["kind"])  # shared: do not modify
    assert doc["apiVersion"] == api_version
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("path", KSERVE_FILES, ids=lambda p: p.name)
def test_kserve_resource_matches_kserves_crd_schema(path):
    docs = yaml_documents(path)
    assert docs
    for doc in docs:
        assert crd_errors(doc) == []


def test_crd_validation_rejects_an_unknown_field():
    runtime = one_document(KSERVE / "servingruntime.yaml", "ServingRuntime")
    broken = copy.deepcopy(runtime)
    broken["spec"]["supportedModelFormats"][0]["autoselect"] = True
    assert crd_errors(broken)


def test_chart_passes_helm_lint_strictly():
    for name, values in CHART_VARIANTS.items():
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], (name, report)


@pytest.mark.parametrize("variant", CHART_VARIANTS)
def test_chart_rendering_has_no_unknown_field(variant):
    docs = render_chart(CHART_VARIANTS[variant])
    kinds = [doc["kind"] for doc in docs]
    assert "Deployment" in kinds and "Service" in kinds and "ConfigMap" in kinds
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            service = next(d for d in docs if d["kind"] == "Service")
            assert service_monitor_problems(doc, service) == []
        else:
            validate_kubernetes(doc)


def without_helm_bookkeeping(doc):
    """A rendered object less what only Helm adds to it."""
    doc = copy.deepcopy(doc)
    for metadata in (doc["metadata"], doc.get("spec", {}).get("template", {}).get("metadata")):
        if metadata:
            labels = metadata.get("labels", {})
            labels.pop("helm.sh/chart", None)
            labels.pop("app.kubernetes.io/managed-by", None)
            metadata.get("annotations", {}).pop("checksum/config", None)
    return doc


def by_kind_and_name(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_chart_defaults_render_the_plain_manifests():
    plain = by_kind_and_name(doc for path in KUBERNETES_FILES for doc in yaml_documents(path))
    rendered = by_kind_and_name(without_helm_bookkeeping(d) for d in render_chart())
    assert sorted(rendered) == sorted(plain)
    # With the autoscaler on, the chart leaves the replica count to it; the
    # plain Deployment states its starting count.
    plain[("Deployment", "inferd")]["spec"].pop("replicas")
    for key in plain:
        assert rendered[key] == plain[key], key


def test_chart_renders_the_plain_service_monitor_when_enabled():
    plain = one_document(SERVICE_MONITOR_FILE, "ServiceMonitor")
    rendered = [without_helm_bookkeeping(d) for d in render_chart({"serviceMonitor": {
        "enabled": True}}) if d["kind"] == "ServiceMonitor"]
    assert rendered == [plain]


def test_chart_without_autoscaling_sets_the_replica_count():
    docs = by_kind_and_name(render_chart(CHART_VARIANTS["fixed-replicas"]))
    assert docs[("Deployment", "inferd")]["spec"]["replicas"] == 3
    assert not any(kind == "HorizontalPodAutoscaler" for kind, _ in docs)
    assert not any(kind == "PodDisruptionBudget" for kind, _ in docs)


def pod_spec(docs):
    return next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]


def test_chart_mounts_each_model_source_read_only_at_models():
    pvc = pod_spec(render_chart(CHART_VARIANTS["pvc"]))
    assert pvc["volumes"] == [{"name": "models", "persistentVolumeClaim": {
        "claimName": "models", "readOnly": True}}]
    assert pvc["containers"][0]["volumeMounts"] == [
        {"name": "models", "mountPath": "/models", "readOnly": True, "subPath": "repo"}]

    init = pod_spec(render_chart(CHART_VARIANTS["init-container"]))
    assert init["volumes"] == [{"name": "models", "emptyDir": {"sizeLimit": "1Gi"}}]
    fetch = init["initContainers"][0]
    assert fetch["image"] == "registry.example/fetch-models:1"
    assert fetch["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True

    bundled = pod_spec(render_chart(CHART_VARIANTS["bundled"]))
    assert bundled["volumes"] == [{"name": "models", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert "initContainers" not in bundled

    image = pod_spec(render_chart())
    assert image["volumes"][0]["image"]["reference"] == f"localhost/inferd-models:{VERSION}"


def test_chart_refuses_an_unknown_model_source():
    with pytest.raises(helm.HelmError, match="models.source must be"):
        render_chart({"models": {"source": "s3"}})
    with pytest.raises(helm.HelmError, match="needs models.initContainer.image"):
        render_chart({"models": {"source": "initContainer"}})


def test_chart_names_resources_after_other_releases():
    docs = render_chart(name="risk")
    assert {d["metadata"]["name"] for d in docs} == {"risk-inferd", "risk-inferd-config"}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"configMapRef": {"name": "risk-inferd-config"}}]


def test_versions_follow_cargo_toml():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION
    images = []
    for path in [*KUBERNETES_FILES, SERVICE_MONITOR_FILE, *KSERVE_FILES]:
        for doc in yaml_documents(path):
            version_label = doc["metadata"].get("labels", {}).get("app.kubernetes.io/version")
            assert version_label in (None, VERSION), path
            spec = doc.get("spec", {})
            spec = spec.get("template", {}).get("spec", spec)
            images += [c["image"] for c in spec.get("containers", [])]
            images += [v["image"]["reference"] for v in spec.get("volumes", []) if "image" in v]
    assert images and all(i.endswith(f":{VERSION}") for i in images), images
