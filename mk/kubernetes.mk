# Kubernetes manifests (examples/kubernetes): every one is checked with
# kubeconform against strict schemas of Kubernetes v1.37 (built by `make
# deps`); also part of `make test`.
.PHONY: check-manifests

check-manifests: deps
	@scripts/check-manifests.sh
