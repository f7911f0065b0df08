#!/usr/bin/env python3
"""Splits rendered manifests (`kubectl kustomize` output) in two: the
built-in kinds, for kubernetes-validate, and the custom resources
(apiVersion groups with a dot that are not Kubernetes' own), for
check_crds.py.

Usage: split_manifests.py IN CORE_OUT CRD_OUT
"""
import sys

import yaml


def builtin(api_version):
    group = api_version.split("/")[0] if "/" in api_version else ""
    return "." not in group or group.endswith(".k8s.io")


def main(src, core, crd):
    with open(src, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for out, keep in ((core, True), (crd, False)):
        with open(out, "w", encoding="utf-8") as f:
            yaml.safe_dump_all(
                [d for d in docs if builtin(d["apiVersion"]) == keep], f, sort_keys=False
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
