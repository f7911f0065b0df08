#!/usr/bin/env python3
"""Prints every YAML document of the given files as one JSON array of
{"file": path, "doc": document}, for tests/deploy.rs to check the manifests'
wiring (configs, ports, probes, grace periods) without a YAML crate.

Runs with the Python of the kubernetes-validate venv, which has PyYAML.
"""
import json
import sys

import yaml


def main(paths):
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    out.append({"file": path, "doc": doc})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
