#!/usr/bin/env bash
# A local petkv cluster on kind: create the cluster (deploy/kind/kind-config.yaml), build the
# image, load it into the nodes, apply the kind overlay, wait for the rollout, then a smoke
# test: write through petkv-0, read on petkv-2, delete pod petkv-1, read again on it.
# Needs kind (v0.33.0, the release the pinned node image belongs to), kubectl and docker or
# podman. `deploy/kind/down.sh` deletes the cluster.
set -euo pipefail
cd "$(dirname "$0")/../.."

readonly CLUSTER=${KIND_CLUSTER_NAME:-petkv}
readonly IMAGE=localhost/petkv:dev-kind  # the tag deploy/kind/kustomization.yaml uses
readonly NS=petkv

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "up.sh: '$1' is not installed ($2)" >&2
    exit 1
  fi
}
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"

# kind drives docker by default and podman with KIND_EXPERIMENTAL_PROVIDER=podman.
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  engine=docker
elif command -v podman >/dev/null 2>&1; then
  engine=podman
  export KIND_EXPERIMENTAL_PROVIDER=podman
else
  echo "up.sh: needs a running docker engine or podman" >&2
  exit 1
fi
echo "up.sh: using $engine"

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "up.sh: kind cluster '$CLUSTER' exists; reusing it"
else
  kind create cluster --name "$CLUSTER" --config deploy/kind/kind-config.yaml --wait 5m
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

"$engine" build -f deploy/Dockerfile -t "$IMAGE" .
if [[ $engine == docker ]]; then
  kind load docker-image --name "$CLUSTER" "$IMAGE"
else
  # kind cannot read podman's image store directly; hand it an archive.
  archive=$(mktemp --suffix=.tar)
  trap 'rm -f "$archive"' EXIT
  podman save -o "$archive" "$IMAGE"
  kind load image-archive --name "$CLUSTER" "$archive"
fi

kubectl apply -k deploy/kind
kubectl -n "$NS" rollout status statefulset/petkv --timeout=5m

# The image has no shell: exec the binary itself.
pk() {
  local pod=$1
  shift
  kubectl -n "$NS" exec "$pod" -c petkv -- /usr/local/bin/petkv "$@" --endpoints localhost:7379
}

echo "== smoke test"
pk petkv-0 members
pk petkv-0 put smoke hello
got=$(pk petkv-2 get smoke --output json)
echo "petkv-2: $got"
grep -q hello <<<"$got"

old_uid=$(kubectl -n "$NS" get pod petkv-1 -o jsonpath='{.metadata.uid}')
kubectl -n "$NS" delete pod petkv-1 --wait=true
# The StatefulSet recreates it under the same name; wait for the new pod to exist first.
for _ in $(seq 60); do
  uid=$(kubectl -n "$NS" get pod petkv-1 -o jsonpath='{.metadata.uid}' 2>/dev/null || true)
  [[ -n $uid && $uid != "$old_uid" ]] && break
  sleep 1
done
kubectl -n "$NS" wait pod/petkv-1 --for=condition=Ready --timeout=5m
got=$(pk petkv-1 get smoke --output json)
echo "petkv-1 after its pod was deleted: $got"
grep -q hello <<<"$got"
pk petkv-1 members
echo "up.sh: smoke test passed; the cluster stays up (deploy/kind/down.sh deletes it)"
