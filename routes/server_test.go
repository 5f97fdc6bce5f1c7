package routes

import (
	"strings"
	"testing"
	"time"
)

// server.body_read_timeout: left out it is DefaultBodyReadTimeout; an
// explicit 0 turns it off and must stay 0; negative values are refused with
// the key's position (by the decoder, which refuses every negative duration).
func TestBodyReadTimeout(t *testing.T) {
	tests := []struct {
		name string
		file string
		want time.Duration
		err  string // substring of the error; "" accepts the file
	}{
		{"left out: default", base, DefaultBodyReadTimeout, ""},
		{"set", base + "server: {body_read_timeout: 300ms}\n", 300 * time.Millisecond, ""},
		{"explicit 0 is off", base + "server: {body_read_timeout: 0}\n", 0, ""},
		{"explicit 0s is off", base + "server: {body_read_timeout: 0s}\n", 0, ""},
		{"negative refused", base + "server:\n  body_read_timeout: -1s\n", 0, `t.yaml:10:22: server.body_read_timeout: duration "-1s" must not be negative`},
		{"not a duration", base + "server: {body_read_timeout: soon}\n", 0, "server.body_read_timeout"},
		{"a number without unit", base + "server: {body_read_timeout: 30}\n", 0, "server.body_read_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("t.yaml", []byte(tt.file))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if f.Server.BodyReadTimeout == nil {
				t.Fatal("body_read_timeout is nil after defaults")
			}
			if got := f.Server.BodyReadTimeout.D(); got != tt.want {
				t.Fatalf("body_read_timeout %v, want %v", got, tt.want)
			}
		})
	}
}

// The sidecar's server section has the same default and the same check:
// the same engine reads the same bodies.
func TestSidecarBodyReadTimeout(t *testing.T) {
	tests := []struct {
		name string
		file string
		want time.Duration
		err  string
	}{
		{"left out: default", sidecarBase, DefaultBodyReadTimeout, ""},
		{"explicit 0 is off", sidecarBase + "server: {body_read_timeout: 0s}\n", 0, ""},
		{"negative refused", sidecarBase + "server: {body_read_timeout: -5ms}\n", 0, `server.body_read_timeout: duration "-5ms" must not be negative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSidecar("s.yaml", []byte(tt.file))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if s.Server.BodyReadTimeout == nil || s.Server.BodyReadTimeout.D() != tt.want {
				t.Fatalf("body_read_timeout %v, want %v", s.Server.BodyReadTimeout, tt.want)
			}
		})
	}
}
