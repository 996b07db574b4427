#!/usr/bin/env bash
# Renders deploy/manifests/termguard.yaml, the plain manifests, from the Helm chart in
# deploy/helm/termguard with its default values and deploy/manifests/values.yaml (the
# placeholders to replace, and the Namespace), as release `termguard` in namespace `termguard`.
#
#   scripts/render-manifests.sh           rewrite deploy/manifests/termguard.yaml
#   scripts/render-manifests.sh --check   fail when it is not what the chart renders
#
# helm comes from scripts/helm.sh (built from its Go module on first use), or $TERMGUARD_HELM.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HELM=${TERMGUARD_HELM:-$("$ROOT/scripts/helm.sh" build)}
OUT=$ROOT/deploy/manifests/termguard.yaml

render() {
  printf '# Rendered from deploy/helm/termguard by scripts/render-manifests.sh; do not edit by hand.\n'
  printf '# Replace the placeholders of deploy/manifests/values.yaml (queue URL, cluster name, IAM role).\n'
  "$HELM" template termguard "$ROOT/deploy/helm/termguard" --namespace termguard \
    --values "$ROOT/deploy/manifests/values.yaml"
}

case ${1:-} in
  --check)
    if ! diff -u "$OUT" <(render) >&2; then
      echo "scripts/render-manifests.sh: $OUT is not what the chart renders; run scripts/render-manifests.sh" >&2
      exit 1
    fi ;;
  "") render > "$OUT.tmp$$" && mv -f "$OUT.tmp$$" "$OUT"; echo "wrote ${OUT#"$ROOT"/}" ;;
  *) echo "usage: scripts/render-manifests.sh [--check]" >&2; exit 2 ;;
esac
