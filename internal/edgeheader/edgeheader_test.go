package edgeheader

import (
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		want Class
	}{
		{"", Plain},
		{"Content-Type", Plain},
		{"X-Forwarded-For", Forwarded},
		{"x_forwarded_proto", Forwarded}, // CGI-style servers fold '_' to '-'
		{"X-Forwarded-", Plain},          // the prefix alone names nothing
		{"X-Forwarded-" + strings.Repeat("A", 40), Forwarded},
		{"FORWARDED", Forwarded},
		{"X_Real_IP", Forwarded},
		{"True-Client-Ip", Forwarded},
		{"Cf-Connecting-Ip", Forwarded},
		{"X-Causeway-Mirror", Forwarded},
		{"X-Original-URL", URLOverride},
		{"x-envoy-original-path", URLOverride},
		{"Http2-Settings", URLOverride},
		{"X-Causeway-Peer-Id", Owned},
		{"X_Causeway_Peer_Id", Owned},
		{"X-Client-Cert-Subject", Owned},
		{"x_client_cert_subject", Owned},
		{"X-Forwarded-Client-Cert", Owned}, // named before the x-forwarded- prefix decides
		{"x_forwarded_client_cert", Owned},
		{"X-Forwarded-Client-Certs", Forwarded},
		{"X-Causeway-Caller-Subject", Owned},
		{"X-Causeway-Caller-" + strings.Repeat("b", 40), Owned},
		{"X-Causeway-Caller-", Plain},
		{"X-Causeway-Other", Plain},
		{"X-Real-Ip-Not", Plain},
		{strings.Repeat("x", 100), Plain},
		// Envoy's hop headers: believed only from a trusted proxy, as
		// Envoy itself believes them only from its trusted hops.
		{"X-Envoy-External-Address", Forwarded},
		{"x_envoy_external_address", Forwarded},
		{"X-Envoy-Internal", Forwarded},
		{"X-Envoy-Upstream-Rq-Timeout-Ms", Forwarded},
		{"X-Envoy-" + strings.Repeat("r", 40), Forwarded},
		{"X-Envoy-", Plain},
		{"X-Envoy-Original-Path", URLOverride}, // the name, not the prefix, decides
		{"X-Forwarded", Forwarded},
		{"Fastly-Client-Ip", Forwarded},
		{"X-Originating-IP", Forwarded},
		{"X-Remote-IP", Forwarded},
		{"X-Remote-Addr", Forwarded},
	} {
		if got := Of(tc.name); got != tc.want {
			t.Errorf("Of(%q) = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// Of runs for every header of every request.
func TestOfDoesNotAllocate(t *testing.T) {
	names := []string{"X-Forwarded-For", "X-Forwarded-Client-Cert", "X_Real_IP", "X-Envoy-External-Address", "X-Envoy-" + strings.Repeat("r", 40), "Content-Type", "X-Causeway-Caller-Subject", strings.Repeat("X", 40)}
	if n := testing.AllocsPerRun(100, func() {
		for _, h := range names {
			_ = Of(h)
		}
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
