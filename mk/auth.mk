# auth: verification cost per algorithm (with and without the token cache)
# and requests/s through a real HTTP server with and without auth (see
# docs/performance.md "Authentication"); fuzzing of token parsing and the Authorization header.
.PHONY: bench-auth fuzz-auth

bench-auth:
	$(GO) test -run '^$$' -bench . -benchmem -count=3 ./auth/

fuzz-auth:
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyToken$$' -fuzztime $${FUZZTIME:-30s} ./auth/
	$(GO) test -run '^$$' -fuzz '^FuzzAuthorizationHeader$$' -fuzztime $${FUZZTIME:-30s} ./auth/
