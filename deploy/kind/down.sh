#!/usr/bin/env bash
# Deletes the kind cluster deploy/kind/up.sh created (volumes included: they live in its nodes).
set -euo pipefail
readonly CLUSTER=${KIND_CLUSTER_NAME:-petkv}
if ! command -v kind >/dev/null 2>&1; then
  echo "down.sh: 'kind' is not installed" >&2
  exit 1
fi
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  if command -v podman >/dev/null 2>&1; then
    export KIND_EXPERIMENTAL_PROVIDER=podman
  fi
fi
kind delete cluster --name "$CLUSTER"
