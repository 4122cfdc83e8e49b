"""deploy/: the kustomizations build, every object validates, the pieces fit, checkov finds nothing unexplained.

Tools: ``kubectl`` (its built-in kustomize), and ``kubernetes-validate`` and ``checkov`` from the tools
virtualenv that ``.ci/install-tools`` makes. Outside CI a missing tool skips its tests with the reason;
with CI=true it fails them.

Custom resources (ServiceMonitor, PrometheusRule) have no schema in kubernetes-validate: their
metadata is validated as ObjectMeta (strictly), and their specs are checked here against what they
point at (the Service's labels and port, the rules file).

base-resources/prometheusrule.yaml is what deploy/prometheus/render_rules.py (``make deploy-rules``)
makes of the rules file; a test runs the script and compares.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings, _is_secret, read_config_file

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAY = DEPLOY / "overlays" / "example"
RULES = DEPLOY / "prometheus" / "rules.yaml"
PROMETHEUSRULE = DEPLOY / "base-resources" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "territory.json"
TOOLS = Path(os.environ.get("TERRITORY_TOOLS_VENV", ROOT / ".venv" / "tools")) / "bin"
IN_CI = os.environ.get("CI", "").lower() == "true"
CRDS = {"ServiceMonitor", "PrometheusRule"}
POD_LABELS = {"app.kubernetes.io/name": "territory-monitor", "app.kubernetes.io/component": "daemon"}
RELEASE = "kube-prometheus-stack"  # the label deploy/prometheus/render_rules.py puts on the rules
RENDER_RULES = DEPLOY / "prometheus" / "render_rules.py"


def tool(name: str) -> str:
    """The path of a tool, or skip (fail in CI) with the reason."""
    found = shutil.which(name) if name == "kubectl" else str(TOOLS / name)
    if found is None or not Path(found).exists():
        reason = f"{name} is not installed (run .ci/install-tools)"
        if IN_CI:
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return found


def build(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return build(DEPLOY)


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return build(OVERLAY)


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} objects of kind {kind} {name or ''}"
    return found[0]


def test_the_base_and_the_overlay_hold_every_object(
    base: list[dict[str, Any]], overlay: list[dict[str, Any]]
) -> None:
    kinds = sorted(o["kind"] for o in base)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Job",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    assert sorted(o["kind"] for o in overlay) == sorted([*kinds, "Namespace", "Secret"])
    assert {o["metadata"].get("namespace") for o in overlay if o["kind"] != "Namespace"} == {"territory"}
    unlabelled = [
        o["kind"]
        for o in base
        if o["metadata"]["labels"].get("app.kubernetes.io/name") != "territory-monitor"
    ]
    assert unlabelled == []
    image = one(overlay, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/revops/territory-monitor:0.1.0"


def _validate(objects: list[dict[str, Any]], folder: Path) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, obj in enumerate(objects):
        if obj["kind"] in CRDS:  # no schema for custom resources: validate their metadata strictly
            obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        path = folder / f"{i:02d}-{obj['kind']}.yaml"
        path.write_text(yaml.safe_dump(obj), encoding="utf-8")
        files.append(str(path))
    return subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", "1.30.0", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_object_validates_against_the_kubernetes_schemas(
    overlay: list[dict[str, Any]], tmp_path: Path
) -> None:
    result = _validate(overlay, tmp_path / "ok")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(overlay), result.stdout
    # The validator is not a rubber stamp: a misspelt field fails.
    broken = json.loads(json.dumps(one(overlay, "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    bad = _validate([broken], tmp_path / "bad")
    assert bad.returncode != 0
    assert "readinesProbe" in bad.stdout + bad.stderr


def test_the_deployment_is_hardened_and_probed(overlay: list[dict[str, Any]]) -> None:
    deployment = one(overlay, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= POD_LABELS.items()
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["args"] == ["serve"]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - the pod's own scratch volume
    # The scheduler's shutdown grace fits in the pod's termination grace.
    config_map = one(overlay, "ConfigMap", volumes[mounts["/etc/territory"]]["configMap"]["name"])
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TERRITORY_CONFIG"] == "/etc/territory/territory.yaml"
    assert (
        pod["terminationGracePeriodSeconds"]
        > yaml.safe_load(config_map["data"]["territory.yaml"])["scheduler"]["shutdown_grace_seconds"]
    )


def test_the_config_map_is_a_valid_config(overlay: list[dict[str, Any]], tmp_path: Path) -> None:
    config_map = one(
        overlay,
        "ConfigMap",
        one(overlay, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
    )
    path = tmp_path / "territory.yaml"
    path.write_text(config_map["data"]["territory.yaml"], encoding="utf-8")
    settings = Settings.model_validate(read_config_file(path))
    assert settings.server.host == "0.0.0.0"  # noqa: S104 - inside the pod, behind the Service
    assert settings.logging.format == "json"


def test_the_migration_job_runs_migrate_with_the_same_config_and_secrets(
    overlay: list[dict[str, Any]],
) -> None:
    job = one(overlay, "Job")
    daemon = one(overlay, "Deployment")["spec"]["template"]["spec"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert container["image"] == daemon["containers"][0]["image"]
    assert container["envFrom"] == daemon["containers"][0]["envFrom"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_selectors_point_at_the_daemon(overlay: list[dict[str, Any]]) -> None:
    service = one(overlay, "Service")
    assert service["spec"]["selector"] == POD_LABELS
    pdb = one(overlay, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == POD_LABELS
    policy = one(overlay, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= POD_LABELS.items()
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {8080}
    monitor = one(overlay, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == RELEASE
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    secret = one(overlay, "Secret")
    (source,) = one(overlay, "Deployment")["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert source["secretRef"]["name"] == secret["metadata"]["name"]


def test_prometheus_rule_groups_equal_the_rules_file(overlay: list[dict[str, Any]]) -> None:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rule = one(overlay, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == RELEASE
    assert rule["spec"]["groups"] == rules["groups"], "run `make deploy-rules` after editing rules.yaml"
    assert PROMETHEUSRULE.read_text(encoding="utf-8") == _rendered_rules(), "run `make deploy-rules`"
    for group in rule["spec"]["groups"]:
        for entry in group["rules"]:
            assert ("alert" in entry) != ("record" in entry)
            assert entry["expr"].strip()


def _rendered_rules() -> str:
    """What ``make deploy-rules`` would write, from the script itself."""
    result = subprocess.run(
        [sys.executable, str(RENDER_RULES), "--stdout"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_dashboard_config_map_carries_the_dashboard(overlay: list[dict[str, Any]]) -> None:
    dashboard = one(overlay, "ConfigMap", "territory-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["territory.json"]) == json.loads(
        DASHBOARD.read_text(encoding="utf-8")
    )


def _secret_variables() -> set[str]:
    found: set[str] = set()

    def walk(model: type[Any], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{prefix}{name}__")
            elif _is_secret(ann):
                found.add(f"TERRITORY_{prefix}{name}".upper())

    walk(Settings, "")
    return found


def test_the_secret_example_names_every_secret_the_daemon_reads(overlay: list[dict[str, Any]]) -> None:
    text = (OVERLAY / "secret.example.yaml").read_text(encoding="utf-8")
    listed = set(one(overlay, "Secret")["stringData"])
    commented = {
        line.strip().lstrip("#").strip().split(":", 1)[0]
        for line in text.splitlines()
        if line.strip().startswith("# TERRITORY_") and ":" in line
    }
    secrets = _secret_variables()
    assert {"TERRITORY_DATABASE_URL", "TERRITORY_WEBHOOKS__HUBSPOT_CLIENT_SECRET"} <= secrets
    assert secrets <= listed | commented, f"missing from secret.example.yaml: {secrets - listed - commented}"
    assert listed <= secrets


def _checkov(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [tool("checkov"), "--compact", "--skip-download", "-o", "json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    passed = sum(len(r.get("results", {}).get("passed_checks", [])) for r in reports)
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    return {"failed": failed, "passed": passed, "skipped": skipped}


def test_checkov_finds_no_unexplained_failure(overlay: list[dict[str, Any]], tmp_path: Path) -> None:
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    for i, obj in enumerate(overlay):
        (rendered / f"{i:02d}-{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump(obj), encoding="utf-8")
    manifests = _checkov("-d", str(rendered), "--framework", "kubernetes")
    assert [(c["check_id"], c["resource"]) for c in manifests["failed"]] == []
    assert manifests["passed"] > 50
    # Every skip carries its reason (the annotation's text after the check id).
    assert manifests["skipped"]
    assert all(len(c["check_result"].get("suppress_comment") or "") > 20 for c in manifests["skipped"])
    image = _checkov("-f", str(DEPLOY / "Dockerfile"), "--framework", "dockerfile")
    assert [(c["check_id"], c.get("check_name")) for c in image["failed"]] == []
    assert image["passed"] > 5
