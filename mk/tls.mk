# North-south TLS (gateway/edgetls): HTTP/2 conformance with h2spec and the
# TLS benchmarks. h2spec comes from scripts/go-tools.txt (`make deps`).
.PHONY: h2spec bench-tls

# h2spec runs the h2spec suite against an https listener built by edgetls and
# against a plain Go TLS server (the baseline), prints both scores, and fails
# if edgetls scores lower. JUnit report: bin/h2spec-report.xml. Then the same
# for the HTTP/1.1 engine's hand-over of h2 and h2c connections to net/http.
h2spec: deps
	@mkdir -p bin
	CAUSEWAY_H2SPEC=1 H2SPEC_REPORT=$(CURDIR)/bin/h2spec-report.xml $(GO) test -count=1 -run '^TestH2Spec$$' -v ./gateway/edgetls/
	CAUSEWAY_H2SPEC=1 $(GO) test -count=1 -run '^TestH2SpecThroughHandOver$$' -v ./gateway/internal/h1server/

# bench-tls measures TLS handshakes/s and keep-alive requests/s over TLS
# against plain HTTP.
bench-tls:
	$(GO) test -run '^$$' -bench 'Handshake|KeepAlive' -benchmem -count=1 ./gateway/edgetls/
