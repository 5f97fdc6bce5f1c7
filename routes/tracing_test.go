package routes

import (
	"strings"
	"testing"
)

func TestTracingValidation(t *testing.T) {
	tests := []struct {
		name string
		file string
		want string // "" accepts the file; otherwise a substring of the errors
	}{
		{"absent", base, ""},
		{"endpoint only", base + "tracing: {otlp_endpoint: \"http://127.0.0.1:4318\"}\n", ""},
		{"all keys", base + "tracing: {otlp_endpoint: \"https://otel.example.com:4318/base\", sample_ratio: 0.25, service_name: edge-eu}\n", ""},
		{"ratio zero", base + "tracing: {otlp_endpoint: \"http://c:4318\", sample_ratio: 0}\n", ""},
		{"no endpoint", base + "tracing: {sample_ratio: 0.5}\n", "t.yaml:9:10: tracing.otlp_endpoint: is required"},
		{"endpoint without scheme", base + "tracing: {otlp_endpoint: \"otel:4318\"}\n", `tracing.otlp_endpoint: "otel:4318" is not an http(s) URL with a host`},
		{"grpc scheme", base + "tracing: {otlp_endpoint: \"grpc://otel:4317\"}\n", "is not an http(s) URL"},
		{"credentials", base + "tracing: {otlp_endpoint: \"http://u:p@otel:4318\"}\n", "tracing.otlp_endpoint: must not carry credentials"},
		{"query", base + "tracing: {otlp_endpoint: \"http://otel:4318/?x=1\"}\n", "must not have a query"},
		{"ratio above one", base + "tracing: {otlp_endpoint: \"http://c:4318\", sample_ratio: 1.5}\n", "t.yaml:9:57: tracing.sample_ratio: must be in [0, 1] (found 1.5)"},
		{"ratio negative", base + "tracing: {otlp_endpoint: \"http://c:4318\", sample_ratio: -0.1}\n", "tracing.sample_ratio: must be in [0, 1]"},
		{"bad service name", base + "tracing: {otlp_endpoint: \"http://c:4318\", service_name: \"a\\tb\"}\n", "tracing.service_name:"},
		{"unknown key", base + "tracing: {otlp_endpoint: \"http://c:4318\", ratio: 1}\n", "tracing.ratio: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.file))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestTracingDefaults(t *testing.T) {
	t.Run("edge", func(t *testing.T) {
		f, err := Parse("t.yaml", []byte(base+"tracing: {otlp_endpoint: \"http://c:4318\"}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if f.Tracing.SampleRatio == nil || *f.Tracing.SampleRatio != 1 || f.Tracing.ServiceName != "causeway-edge" {
			t.Fatalf("defaults: %+v", f.Tracing)
		}
	})
	t.Run("explicit zero ratio is kept", func(t *testing.T) {
		f, err := Parse("t.yaml", []byte(base+"tracing: {otlp_endpoint: \"http://c:4318\", sample_ratio: 0}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if *f.Tracing.SampleRatio != 0 {
			t.Fatalf("sample_ratio = %v, want 0", *f.Tracing.SampleRatio)
		}
	})
	t.Run("absent stays nil", func(t *testing.T) {
		f, err := Parse("t.yaml", []byte(base))
		if err != nil {
			t.Fatal(err)
		}
		if f.Tracing != nil {
			t.Fatalf("tracing = %+v, want nil", f.Tracing)
		}
	})
	t.Run("sidecar", func(t *testing.T) {
		s, err := ParseSidecar("s.yaml", []byte(`version: 1
identity: {cert_file: c.pem, key_file: k.pem, bundle_file: b.pem}
inbound: {forward_to: "127.0.0.1:7001", allow: ["spiffe://example.org/edge"]}
tracing: {otlp_endpoint: "http://c:4318", sample_ratio: 0.5}
`))
		if err != nil {
			t.Fatal(err)
		}
		if *s.Tracing.SampleRatio != 0.5 || s.Tracing.ServiceName != "causeway-sidecar" {
			t.Fatalf("defaults: %+v", s.Tracing)
		}
	})
	t.Run("sidecar refuses a bad endpoint", func(t *testing.T) {
		_, err := ParseSidecar("s.yaml", []byte(`version: 1
identity: {cert_file: c.pem, key_file: k.pem, bundle_file: b.pem}
inbound: {forward_to: "127.0.0.1:7001", allow: ["spiffe://example.org/edge"]}
tracing: {otlp_endpoint: "c:4318"}
`))
		if err == nil || !strings.Contains(err.Error(), "s.yaml:4:") || !strings.Contains(err.Error(), "tracing.otlp_endpoint") {
			t.Fatalf("err = %v", err)
		}
	})
}
