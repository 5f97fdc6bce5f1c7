# Reliability runs too long for `make test` (docs/reliability.md reports
# them). body-integrity: TestBodyIntegrity with a million POSTs per mode
# (plain, TLS, through a sidecar); BODY_INTEGRITY_REQUESTS sets the count.
.PHONY: body-integrity

body-integrity:
	BODY_INTEGRITY_REQUESTS=$${BODY_INTEGRITY_REQUESTS:-1000000} $(GO) test -count=1 -timeout 180m -run '^TestBodyIntegrity$$' -v ./test/
