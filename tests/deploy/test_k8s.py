"""deploy/k8s validated offline: kubernetes-validate for the built-in kinds, the Prometheus
Operator's ServiceMonitor against its CRD schema (compiled into the npm package
@kubernetes-models/prometheus-operator, run with node), and cross-checks between manifests.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.fixtures.tools import node_package

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# EKS's oldest version in standard support when this was written; the manifests use nothing newer.
K8S_VERSION = "1.31"
VALIDATE_SM = """
import { ServiceMonitor }
  from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
const doc = JSON.parse(process.argv[1]);
try { new ServiceMonitor(doc).validate(); } catch (e) { console.log(e.message); process.exit(1); }
"""


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    """Every manifest kustomization.yaml lists, by kind."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} manifests"
            found[doc["kind"]] = doc
    return found


def test_kustomization_lists_every_manifest_and_sets_the_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    assert kustomization["namespace"] == "stream-projector"


def validation_error(doc: dict[str, Any]) -> str | None:
    """kubernetes-validate's strict verdict (unknown fields are errors), None if valid."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return str(error)
    return None


@pytest.mark.parametrize(
    "kind",
    ["Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"],
)
def test_builtin_manifest_is_valid_for_kubernetes(
    docs: dict[str, dict[str, Any]], kind: str
) -> None:
    assert validation_error(docs[kind]) is None


def test_validator_rejects_broken_deployments(docs: dict[str, dict[str, Any]]) -> None:
    typo = copy.deepcopy(docs["Deployment"])
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert validation_error(typo) is not None
    wrong_type = copy.deepcopy(docs["Deployment"])
    wrong_type["spec"]["replicas"] = "two"
    assert validation_error(wrong_type) is not None


def servicemonitor_error(doc: dict[str, Any]) -> str | None:
    """The CRD schema's verdict on a ServiceMonitor, None if valid."""
    node_package("@kubernetes-models/prometheus-operator")
    done = subprocess.run(
        ["node", "--input-type=module", "-e", VALIDATE_SM, json.dumps(doc)],
        cwd=ROOT / ".tools",
        capture_output=True,
        text=True,
        timeout=60,
    )
    return None if done.returncode == 0 else (done.stdout + done.stderr)


def test_servicemonitor_matches_the_prometheus_operator_crd(
    docs: dict[str, dict[str, Any]],
) -> None:
    monitor = docs["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert servicemonitor_error(monitor) is None
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["interval"] = 15  # a duration string in the CRD
    assert servicemonitor_error(broken) is not None


def config_toml(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The daemon's configuration as the ConfigMap ships it."""
    return tomllib.loads(docs["ConfigMap"]["data"]["config.toml"])


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The daemon's container in the Deployment."""
    (only,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def probe_problems(docs: dict[str, dict[str, Any]]) -> list[str]:
    """Probes that do not hit /healthz and /readyz on the configured http.port."""
    spec = container(docs)
    port = config_toml(docs)["http"]["port"]
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    wanted = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    problems = []
    for probe, path in wanted.items():
        get = spec.get(probe, {}).get("httpGet", {})
        resolved = ports.get(get.get("port"), get.get("port"))
        if get.get("path") != path or resolved != port:
            problems.append(f"{probe} hits {get.get('path')} on {resolved}, not {path} on {port}")
    return problems


def test_probes_hit_healthz_and_readyz_on_the_configured_port(
    docs: dict[str, dict[str, Any]],
) -> None:
    assert probe_problems(docs) == []
    moved = copy.deepcopy(docs)
    moved["ConfigMap"]["data"]["config.toml"] = moved["ConfigMap"]["data"]["config.toml"].replace(
        "port = 9102", "port = 9200"
    )
    assert len(probe_problems(moved)) == 3


def test_grace_period_outlasts_the_shutdown_deadline(docs: dict[str, dict[str, Any]]) -> None:
    grace = docs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    deadline = config_toml(docs)["shutdown"]["deadline_seconds"]
    assert grace > deadline


def test_deployment_runs_two_hardened_replicas(docs: dict[str, dict[str, Any]]) -> None:
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    spec = container(docs)
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = spec["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    for key in ("cpu", "memory"):
        assert spec["resources"]["requests"][key] and spec["resources"]["limits"][key]
    mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_config_is_mounted_where_the_daemon_reads_it(docs: dict[str, dict[str, Any]]) -> None:
    spec = container(docs)
    path = spec["args"][spec["args"].index("--config") + 1]
    directory, filename = path.rsplit("/", 1)
    mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[directory])
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    (item,) = volume["configMap"]["items"]
    assert item["path"] == filename and item["key"] in docs["ConfigMap"]["data"]


def test_service_account_carries_the_irsa_role(docs: dict[str, dict[str, Any]]) -> None:
    account = docs["ServiceAccount"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether matchLabels select these labels."""
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_connect_pods_service_monitor_and_budget(
    docs: dict[str, dict[str, Any]],
) -> None:
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert matches(docs["Deployment"]["spec"]["selector"]["matchLabels"], pod_labels)
    assert matches(docs["Service"]["spec"]["selector"], pod_labels)
    assert matches(docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], pod_labels)
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    monitor = docs["ServiceMonitor"]["spec"]
    assert matches(monitor["selector"]["matchLabels"], docs["Service"]["metadata"]["labels"])
    service_ports = {p["name"]: p for p in docs["Service"]["spec"]["ports"]}
    (endpoint,) = monitor["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert service_ports[endpoint["port"]]["port"] == config_toml(docs)["http"]["port"]
