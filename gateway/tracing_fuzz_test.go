package gateway

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// FuzzTraceparent holds validTraceparent against OpenTelemetry's W3C Trace
// Context extractor (the one the edge uses when tracing is on), and checks
// that propagateTrace always leaves the request with a valid traceparent
// and logs the trace id it carries.
//
// Two differences are intended:
//   - for version 00, OpenTelemetry refuses flags with reserved bits set
//     (above 0x03), while validTraceparent passes them on. Trace Context
//     asks a proxy that is not a participant to forward the header as it
//     came, and reserved flags are for later versions of the spec to
//     define; refusing them would restart the client's trace at this hop.
//   - OpenTelemetry (v1.47) accepts a version-00 header followed by a lone
//     "-" (56 characters: its split on "-" drops the empty last field);
//     version 00 is exactly 55 characters, so validTraceparent refuses it.
func FuzzTraceparent(f *testing.F) {
	for _, s := range []string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",       // reserved flags
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",       // upper case
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",       // zero trace id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",       // zero span id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",      // version 00 with more
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // a later version
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff is invalid
		"0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
		" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
		"", "00", "garbage",
	} {
		f.Add(s, "congo=t61rcWkgMzE")
	}
	tc := propagation.TraceContext{}
	f.Fuzz(func(t *testing.T, tp, ts string) {
		valid := validTraceparent(tp)
		h := http.Header{}
		h.Set(traceparentHeader, tp)
		sc := trace.SpanContextFromContext(tc.Extract(context.Background(), propagation.HeaderCarrier(h)))
		otelValid := sc.IsValid()
		flags, flagsErr := strconv.ParseUint(tp[min(53, len(tp)):], 16, 8)
		reservedFlags := len(tp) == 55 && tp[:2] == "00" && lowerHex(tp[53:55]) && flagsErr == nil && flags > 3
		otelTrailingDash := len(tp) == 56 && tp[:2] == "00" && tp[55] == '-'
		switch {
		case valid == otelValid:
		case valid && reservedFlags: // the intended differences above
		case otelValid && otelTrailingDash:
		default:
			t.Fatalf("traceparent %q: validTraceparent %v, OpenTelemetry %v", tp, valid, otelValid)
		}
		if valid && otelValid && sc.TraceID().String() != tp[3:35] {
			t.Fatalf("traceparent %q: trace id %s, OpenTelemetry read %s", tp, tp[3:35], sc.TraceID())
		}

		r, err := http.NewRequest(http.MethodGet, "http://x/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header[traceparentHeader] = []string{tp}
		r.Header[tracestateHeader] = []string{ts}
		var st reqState
		st.propagateTrace(r)
		out := r.Header.Get(traceparentHeader)
		if !validTraceparent(out) || st.traceID != out[3:35] {
			t.Fatalf("after %q: traceparent %q, logged trace id %q", tp, out, st.traceID)
		}
		if valid != !st.traceStarted || (valid && (out != tp || r.Header.Get(tracestateHeader) != ts)) {
			t.Fatalf("a valid traceparent %q (and its tracestate) must pass unchanged: got %q, %q, started=%v", tp, out, r.Header.Get(tracestateHeader), st.traceStarted)
		}
		if !valid && r.Header.Get(tracestateHeader) != "" {
			t.Fatalf("a tracestate outlived the invalid traceparent %q", tp)
		}
	})
}
