package routes

import (
	"strings"
	"testing"
	"time"
)

// tlsBase is a valid file with a tls section; cases append to or replace it.
const tlsBase = base + `tls:
  certificates:
    - {cert_file: a.pem, key_file: a-key.pem}
`

func TestTLSValidation(t *testing.T) {
	acme := func(body string) string { return base + "tls:\n  acme:\n" + body }
	tests := []struct {
		name string
		file string
		want string // "" accepts the file; otherwise a substring of the errors
	}{
		{"static certificate", tlsBase, ""},
		{"min version 1.3", tlsBase + "  min_version: \"1.3\"\n", ""},
		{"min version 1.1 refused", tlsBase + "  min_version: \"1.1\"\n", `tls.min_version: must be "1.2" or "1.3" (found "1.1")`},
		{"neither certificates nor acme", base + "tls: {min_version: \"1.2\"}\n", "tls: needs certificates or acme"},
		{"certificate without key", base + "tls:\n  certificates: [{cert_file: a.pem}]\n", "tls.certificates[0]: key_file is required"},
		{"client auth without CA", tlsBase + "  client_auth: require\n", "tls.client_auth: needs tls.client_ca_file"},
		{"client auth unknown", tlsBase + "  client_ca_file: ca.pem\n  client_auth: optional\n", `tls.client_auth: must be require or verify_if_given (found "optional")`},
		{"client auth verify_if_given", tlsBase + "  client_ca_file: ca.pem\n  client_auth: verify_if_given\n", ""},
		{"acme with dir cache", acme("    hosts: [api.example.com]\n    cache_dir: /tmp/acme\n"), ""},
		{"acme without cache_dir", acme("    hosts: [api.example.com]\n"), "tls.acme.cache_dir: is required"},
		{"acme wildcard host", acme("    hosts: [\"*.example.com\"]\n    cache_dir: /tmp/acme\n"), "cannot issue wildcards"},
		{"acme single-label host", acme("    hosts: [localhost]\n    cache_dir: /tmp/acme\n"), `"localhost" is not a fully qualified name`},
		{"acme duplicate host", acme("    hosts: [a.example.com, A.example.com]\n    cache_dir: /tmp/acme\n"), `tls.acme.hosts[1]: host "a.example.com" is listed twice`},
		{"acme no hosts and no on_demand", acme("    cache_dir: /tmp/acme\n"), "tls.acme.hosts: list the host names"},
		{"acme redis cache without redis", acme("    hosts: [api.example.com]\n    cache: redis\n"), "cache: redis needs the redis section"},
		{"acme redis cache", acme("    hosts: [api.example.com]\n    cache: redis\n") + "redis: {url: \"redis://127.0.0.1:6379/0\"}\n", ""},
		{"acme unknown cache", acme("    hosts: [api.example.com]\n    cache: s3\n"), `tls.acme.cache: must be dir or redis (found "s3")`},
		{"acme plain http directory", acme("    hosts: [api.example.com]\n    cache_dir: /tmp/acme\n    directory_url: http://ca.example.com/dir\n"), "is not an https URL"},
		{"on demand only", acme("    cache_dir: /tmp/acme\n    on_demand: {ask: \"http://127.0.0.1:9000/ask\"}\n"), ""},
		{"on demand bad ask", acme("    cache_dir: /tmp/acme\n    on_demand: {ask: \"ftp://x/ask\"}\n"), `tls.acme.on_demand.ask: "ftp://x/ask" is not an http(s) URL`},
		{"on demand negative burst", acme("    cache_dir: /tmp/acme\n    on_demand: {ask: \"http://x/ask\", burst: -1}\n"), "tls.acme.on_demand.burst: must not be negative"},
		{"on demand negative interval", acme("    cache_dir: /tmp/acme\n    on_demand: {ask: \"http://x/ask\", interval: -1s}\n"), "must not be negative"},
		{"acme handshake_wait", acme("    hosts: [api.example.com]\n    cache_dir: /tmp/acme\n    handshake_wait: 250ms\n"), ""},
		{"acme handshake_wait at its bound", acme("    hosts: [api.example.com]\n    cache_dir: /tmp/acme\n    handshake_wait: 5m\n"), ""},
		{"hsts", tlsBase + "  hsts: {max_age: 1h}\n", ""},
		{"hsts preload too short", tlsBase + "  hsts: {max_age: 1h, include_subdomains: true, preload: true}\n", "tls.hsts.preload: needs max_age of at least 8760h"},
		{"hsts preload without subdomains", tlsBase + "  hsts: {max_age: 8760h, preload: true}\n", "tls.hsts.preload: needs"},
		{"hsts preload", tlsBase + "  hsts: {max_age: 8760h, include_subdomains: true, preload: true}\n", ""},
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

func TestTLSDefaults(t *testing.T) {
	f, err := Parse("t.yaml", []byte(base+`tls:
  client_ca_file: ca.pem
  hsts: {}
  acme:
    hosts: [API.Example.com]
    cache_dir: /tmp/acme
    on_demand: {ask: "http://127.0.0.1:9/ask"}
`))
	if err != nil {
		t.Fatal(err)
	}
	tl := f.TLS
	checks := []struct {
		name      string
		got, want any
	}{
		{"min_version", tl.MinVersion, "1.2"},
		{"client_auth with a CA", tl.ClientAuth, "require"},
		{"hsts max_age", tl.HSTS.MaxAge.D(), 365 * 24 * time.Hour},
		{"acme cache", tl.ACME.Cache, "dir"},
		{"acme directory", tl.ACME.DirectoryURL, "https://acme-v02.api.letsencrypt.org/directory"},
		{"hosts lower-cased", tl.ACME.Hosts[0], "api.example.com"},
		{"on_demand interval", tl.ACME.OnDemand.Interval.D(), DefaultOnDemandInterval},
		{"on_demand burst", tl.ACME.OnDemand.Burst, DefaultOnDemandBurst},
		{"acme handshake_wait", tl.ACME.HandshakeWait.D(), DefaultACMEHandshakeWait},
		{"https listener", f.Listen.HTTPS, DefaultHTTPSAddr},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Fatalf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

// TestACMEHandshakeWait checks the value parsed and that a bad
// tls.acme.handshake_wait is reported at its position, together with the
// file's other errors.
func TestACMEHandshakeWait(t *testing.T) {
	file := func(wait string) string {
		return base + "tls:\n  acme:\n    hosts: [api.example.com]\n    cache_dir: /tmp/acme\n    handshake_wait: " + wait + "\n    directory_url: http://ca.example.com/dir\n"
	}
	// base is 9 lines long: handshake_wait is on line 13, directory_url on 14.
	const other = `t.yaml:14:20: tls.acme.directory_url: "http://ca.example.com/dir" is not an https URL`
	tests := []struct {
		name, wait string
		want       []string // errors, in the file's order; nil: only other
		parsed     time.Duration
	}{
		{"not a duration", "soon", []string{`t.yaml:13:21: tls.acme.handshake_wait: invalid duration "soon": use a Go duration such as "250ms" or "1m"`, other}, 0},
		{"negative", "-1s", []string{`t.yaml:13:21: tls.acme.handshake_wait: duration "-1s" must not be negative`, other}, 0},
		{"longer than an order runs", "10m", []string{`t.yaml:13:21: tls.acme.handshake_wait: must be at most 5m0s, the longest an order runs (found 10m0s)`, other}, 0},
		{"a number without unit", "30", []string{`t.yaml:13:21: tls.acme.handshake_wait: invalid duration "30"`, other}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(file(tt.wait)))
			if err == nil {
				t.Fatal("accepted")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("errors:\n%s\nwant %d lines", err, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(strings.TrimSpace(lines[i]), w) {
					t.Errorf("error %d: %q, want prefix %q", i, strings.TrimSpace(lines[i]), w)
				}
			}
		})
	}
	for _, tt := range []struct {
		wait string
		want time.Duration
	}{{"250ms", 250 * time.Millisecond}, {"2m", 2 * time.Minute}, {"0s", DefaultACMEHandshakeWait}} {
		t.Run("parse "+tt.wait, func(t *testing.T) {
			f, err := Parse("t.yaml", []byte(strings.Replace(file(tt.wait), "http://ca", "https://ca", 1)))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.TLS.ACME.HandshakeWait.D(); got != tt.want {
				t.Fatalf("handshake_wait %s, want %s", got, tt.want)
			}
		})
	}
}
