package routes

import (
	"net/url"
)

// Defaults of the tracing section.
const (
	DefaultTracingSampleRatio = 1.0
	DefaultTracingEdgeName    = "causeway-edge"
	DefaultTracingSidecarName = "causeway-sidecar"
)

// applyDefaults fills the tracing section's defaults; service is the
// service.name used when the file names none.
func (t *Tracing) applyDefaults(service string) {
	if t == nil {
		return
	}
	if t.SampleRatio == nil {
		r := DefaultTracingSampleRatio
		t.SampleRatio = &r
	}
	if t.ServiceName == "" {
		t.ServiceName = service
	}
}

func (f *File) defaultTracing() { f.Tracing.applyDefaults(DefaultTracingEdgeName) }

// checkTracing checks the tracing section. The endpoint must be a URL with
// a scheme: the exporter would otherwise guess one, and a typo would only
// show as spans that never arrive.
func (c *checker) checkTracing() {
	t := c.f.Tracing
	if t == nil {
		return
	}
	if t.OTLPEndpoint == "" {
		c.errorf("tracing.otlp_endpoint", "is required (an OTLP/HTTP URL such as http://otel-collector:4318)")
	} else if u, err := url.Parse(t.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.errorf("tracing.otlp_endpoint", "%q is not an http(s) URL with a host", RedactValue(t.OTLPEndpoint))
	} else if u.User != nil {
		// The file is shown on the admin API; credentials belong in the
		// collector's network policy, not in a URL here.
		c.errorf("tracing.otlp_endpoint", "must not carry credentials")
	} else if u.RawQuery != "" || u.Fragment != "" {
		c.errorf("tracing.otlp_endpoint", "must not have a query or fragment")
	}
	if r := t.SampleRatio; r != nil && (*r < 0 || *r > 1 || *r != *r) {
		c.errorf("tracing.sample_ratio", "must be in [0, 1] (found %g)", *r)
	}
	if !validServiceName(t.ServiceName) {
		c.errorf("tracing.service_name", "%q must be 1 to 128 printable ASCII characters", t.ServiceName)
	}
}

func validServiceName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
