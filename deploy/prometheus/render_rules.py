"""Render deploy/base-resources/prometheusrule.yaml from deploy/prometheus/rules.yaml.

The rules file is the one people edit (promtool checks and unit-tests it); kube-prometheus-stack loads
the same groups from a PrometheusRule object, which this script writes (``make deploy-rules``).
``--stdout`` prints it instead; tests/e2e/test_deploy.py fails while the committed file differs.
Needs PyYAML only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1]
RULES = DEPLOY / "prometheus" / "rules.yaml"
PROMETHEUSRULE = DEPLOY / "base-resources" / "prometheusrule.yaml"
RELEASE = "kube-prometheus-stack"
"""The Helm release name kube-prometheus-stack selects rules by (``release`` label)."""

HEADER = """\
# GENERATED from deploy/prometheus/rules.yaml by deploy/prometheus/render_rules.py (make deploy-rules):
# edit that file, then regenerate; tests/e2e/test_deploy.py fails while the two differ.
# kube-prometheus-stack loads PrometheusRules labelled `release: <its Helm release name>`
# (prometheus.prometheusSpec.ruleSelector); see servicemonitor.yaml for a different release name.
"""


class _Literal(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Literal.add_representer(str, _str)


def render_prometheusrule(rules: dict[str, Any]) -> str:
    """The PrometheusRule object carrying ``rules``' groups, as YAML text."""
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "territory",
            "labels": {"app.kubernetes.io/name": "territory-monitor", "release": RELEASE},
        },
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(obj, Dumper=_Literal, sort_keys=False, width=110, allow_unicode=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stdout", action="store_true", help="print the PrometheusRule instead of writing it"
    )
    args = parser.parse_args(argv)
    text = render_prometheusrule(yaml.safe_load(RULES.read_text(encoding="utf-8")))
    if args.stdout:
        sys.stdout.write(text)
        return
    PROMETHEUSRULE.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {PROMETHEUSRULE.relative_to(DEPLOY.parent)}\n")


if __name__ == "__main__":
    main()
