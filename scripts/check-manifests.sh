#!/usr/bin/env bash
# Checks every Kubernetes manifest under examples/ with kubeconform, strict:
# unknown or misplaced fields fail, as do wrong types. Kinds without a
# schema here are skipped by name, never silently: Prometheus Operator's
# ServiceMonitor, kustomize's own file, and spire-controller-manager's
# ClusterSPIFFEID (a CRD: its schema comes with the controller's CRDs, not
# with Kubernetes; every built-in kind in the same folder is still checked).
# The Gateway API's kinds are checked against schemas made from its CRDs.
# A broken manifest of each sort is checked first so
# that a check which passes everything is itself caught.
set -euo pipefail
cd "$(dirname "$0")/.."
schemas="$PWD/.tools/k8s-schemas/v1.37.2"
# The Gateway API's kinds (GatewayClass, Gateway, HTTPRoute, ...): built by
# make deps from the CRDs of the version in go.mod.
gwschemas="$PWD/.tools/k8s-schemas/gateway-api-$(go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api)"
kc="$PWD/.tools/bin/kubeconform"
# Causeway's own kinds (CausewayPolicy), from the CRDs in examples/: built
# here, as they change with the source.
cwschemas=$(mktemp -d); trap 'rm -rf "$cwschemas"' EXIT
go run ./scripts/kubeschema -crds examples/kubernetes/gateway-api/crd -out "$cwschemas" >/dev/null
[ -x "$kc" ] && [ -d "$schemas" ] && [ -d "$gwschemas" ] || { echo "check-manifests: run make deps first" >&2; exit 1; }
args=(-strict -summary -schema-location "$schemas/{{.ResourceKind}}{{.KindSuffix}}.json"
  -schema-location "$gwschemas/{{.ResourceKind}}{{.KindSuffix}}.json"
  -schema-location "$cwschemas/{{.ResourceKind}}{{.KindSuffix}}.json" -skip Kustomization,ServiceMonitor,ClusterSPIFFEID)

bad=$(mktemp --suffix=.yaml); trap 'rm -rf "$bad" "$cwschemas"' EXIT
printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 1\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: i, readOnlyRootFilesytem: true}]\n' >"$bad"
if "$kc" "${args[@]}" "$bad" >/dev/null 2>&1; then
  echo "check-manifests: kubeconform accepted a misspelt field: the schemas are not strict" >&2
  exit 1
fi
# The same for a Gateway API kind: a misspelt field inside an HTTPRoute rule.
printf 'apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: x}\nspec:\n  rules:\n  - backendRefs: [{name: s, port: 80, wieght: 1}]\n' >"$bad"
if "$kc" "${args[@]}" "$bad" >/dev/null 2>&1; then
  echo "check-manifests: kubeconform accepted a misspelt HTTPRoute field: the Gateway API schemas are missing or not strict" >&2
  exit 1
fi

# And for Causeway's own: a misspelt field of a CausewayPolicy.
printf 'apiVersion: causeway.dev/v1alpha1\nkind: CausewayPolicy\nmetadata: {name: x}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n  authenticator: [{ref: a}]\n' >"$bad"
if "$kc" "${args[@]}" "$bad" >/dev/null 2>&1; then
  echo "check-manifests: kubeconform accepted a misspelt CausewayPolicy field: its schema is missing or not strict" >&2
  exit 1
fi

mapfile -t files < <(find examples -name '*.yaml' -path '*kubernetes*' | sort)
[ ${#files[@]} -gt 0 ] || { echo "check-manifests: no manifests found" >&2; exit 1; }
"$kc" "${args[@]}" "${files[@]}"
