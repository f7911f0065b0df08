#!/usr/bin/env python3
"""Validates the custom resources in rendered manifests (cert-manager's
Certificate, the Prometheus Operator's ServiceMonitor and PrometheusRule),
which kubernetes-validate has no schema for, against models generated from
those projects' CRDs (the cloudcoil-models-* packages), strictly: a document
must parse, and parsing then dumping it must give it back unchanged, so an
unknown or misspelt field (which the models would drop) is an error.

Usage: check_crds.py FILE...  Prints one line per problem; exit 1 if any,
2 for a custom resource of a kind it has no model for.
"""
import sys

import yaml
from cloudcoil.models.cert_manager import v1 as cert_manager
from cloudcoil.models.prometheus_operator import v1 as prometheus

MODELS = {
    ("cert-manager.io/v1", "Certificate"): cert_manager.Certificate,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): prometheus.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): prometheus.PrometheusRule,
}


def diff(want, got, path, out):
    if isinstance(want, dict) and isinstance(got, dict):
        for k in want:
            if k not in got:
                out.append(f"{path}.{k}: unknown field")
            else:
                diff(want[k], got[k], f"{path}.{k}", out)
    elif isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (w, g) in enumerate(zip(want, got)):
            diff(w, g, f"{path}[{i}]", out)
    elif want != got:
        out.append(f"{path}: {want!r} reads back as {got!r}")


def main(paths):
    problems = []
    unknown = False
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if not doc:
                    continue
                key = (doc.get("apiVersion"), doc.get("kind"))
                name = f"{path}: {key[1]} {doc.get('metadata', {}).get('name')}"
                model = MODELS.get(key)
                if model is None:
                    print(f"{name}: no model for {key[0]} {key[1]}")
                    unknown = True
                    continue
                try:
                    got = model.model_validate(doc).model_dump(
                        by_alias=True, exclude_unset=True, mode="json"
                    )
                except Exception as e:  # pydantic's ValidationError, and any other
                    problems.append(f"{name}: {e}")
                    continue
                found = []
                diff(doc, got, "", found)
                problems.extend(f"{name}: {p}" for p in found)
    for p in problems:
        print(p)
    if unknown:
        sys.exit(2)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
