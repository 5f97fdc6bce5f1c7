# Kubernetes manifests (examples/kubernetes): every one is checked with
# kubeconform against strict schemas of Kubernetes v1.37 and of the Gateway
# API version in go.mod (both built by `make deps`); also part of `make test`.
.PHONY: check-manifests

check-manifests: deps
	@scripts/check-manifests.sh

# scale-k8s measures the Kubernetes provider at scale against a real API
# server (docs/performance.md "Kubernetes"): 10,000 HTTPRoutes and 100,000
# endpoints by default; CAUSEWAY_SCALE_ROUTES and CAUSEWAY_SCALE_ENDPOINTS
# change that, and CAUSEWAY_SCALE_POLICY=1 adds a Gateway-wide
# CausewayPolicy over every route. It also runs TestReplicas at that scale:
# three edge processes, the status writer killed and replaced. It takes
# minutes, so it is not part of `make test` (which runs TestReplicas small).
.PHONY: scale-k8s
scale-k8s: deps
	PATH=$(CURDIR)/.tools/bin:$$PATH CAUSEWAY_SCALE=1 $(GO) test -count=1 -timeout 60m -run 'TestScale|TestReplicas' -v ./test/kubernetes/
