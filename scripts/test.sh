#!/usr/bin/env bash
# The whole test suite, on a fresh machine of the project's kind: installs what
# the tests need (redis-server from Debian's packages), then checks formatting
# and lints, then runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The SDK tests (tests/sdk_clients.rs) build a venv and pip-install the
# vendors' Python SDKs; they fail, never skip, without these.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
# tests/deploy.rs renders the Kustomize overlays with `kubectl kustomize`
# (Debian's package); it pip-installs kubernetes-validate and the CRD
# models into target/kv itself.
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubectl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The package's service is not what the tests use: they start their own
# redis-server processes on free ports.
if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server >/dev/null 2>&1 || true; fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --no-fail-fast
