#!/usr/bin/env bash
# Checks every Kubernetes manifest under examples/ with kubeconform, strict:
# unknown or misplaced fields fail, as do wrong types. Kinds without a
# schema here are skipped by name, never silently: Prometheus Operator's
# ServiceMonitor, kustomize's own file, and spire-controller-manager's
# ClusterSPIFFEID (a CRD: its schema comes with the controller's CRDs, not
# with Kubernetes; every built-in kind in the same folder is still checked). A broken manifest is checked first so
# that a check which passes everything is itself caught.
set -euo pipefail
cd "$(dirname "$0")/.."
schemas="$PWD/.tools/k8s-schemas/v1.37.2"
kc="$PWD/.tools/bin/kubeconform"
[ -x "$kc" ] && [ -d "$schemas" ] || { echo "check-manifests: run make deps first" >&2; exit 1; }
args=(-strict -summary -schema-location "$schemas/{{.ResourceKind}}{{.KindSuffix}}.json" -skip Kustomization,ServiceMonitor,ClusterSPIFFEID)

bad=$(mktemp --suffix=.yaml); trap 'rm -f "$bad"' EXIT
printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 1\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: i, readOnlyRootFilesytem: true}]\n' >"$bad"
if "$kc" "${args[@]}" "$bad" >/dev/null 2>&1; then
  echo "check-manifests: kubeconform accepted a misspelt field: the schemas are not strict" >&2
  exit 1
fi

mapfile -t files < <(find examples -name '*.yaml' -path '*kubernetes*' | sort)
[ ${#files[@]} -gt 0 ] || { echo "check-manifests: no manifests found" >&2; exit 1; }
"$kc" "${args[@]}" "${files[@]}"
