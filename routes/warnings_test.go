package routes

import (
	"strings"
	"testing"
)

// Footguns are accepted with a warning at their position; a plain-http
// JWKS URL beyond loopback is refused.
func TestWarningsAndInsecureJWKS(t *testing.T) {
	const base = "version: 1\nlisten: {http: \":8080\"%s}\nupstreams:\n  u: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n"
	jwt := func(url, extra string) string {
		return "authenticators:\n  users:\n    jwt: {issuer: https://id/, audiences: [api], algorithms: [RS256], jwks_url: \"" + url + "\"" + extra + "}\n"
	}
	tests := []struct {
		name, listen, extra string
		warn, err           string // substrings; "" = none expected
	}{
		{"clean", "", "", "", ""},
		{"trust everyone v4", "", "trusted_proxies: [\"0.0.0.0/0\"]\n", "3:19: trusted_proxies[0]: warning: 0.0.0.0/0 trusts every peer", ""},
		{"trust everyone v6", "", "trusted_proxies: [\"10.0.0.0/8\", \"::/0\"]\n", "trusted_proxies[1]: warning: ::/0 trusts every peer", ""},
		{"admin on all interfaces without token", ", admin: \"0.0.0.0:9901\"", "", "warning: the admin listener 0.0.0.0:9901 is reachable from other hosts and has no token", ""},
		{"admin on all interfaces with token", ", admin: \"0.0.0.0:9901\"", "admin: {token_env: ADMIN_TOKEN}\n", "", ""},
		{"admin on loopback", ", admin: \"127.0.0.1:9901\"", "", "", ""},
		{"redis password inline", "", "redis: {url: \"redis://:pw@127.0.0.1:6379/0\"}\n", "redis.url: warning: the password is written in the file", ""},
		{"jwks credentials", "", jwt("https://u:pw@id.example.com/jwks", ""), "jwks_url: warning: the URL carries credentials", ""},
		{"jwks token in query", "", jwt("https://id.example.com/jwks?api_key=x", ""), "jwks_url: warning: the URL carries credentials", ""},
		{"jwks plain http refused", "", jwt("http://id.example.com/jwks", ""), "", "jwks_url: plain http to id.example.com lets anyone on the network path replace the signing keys"},
		{"jwks plain http allowed", "", jwt("http://id.example.com/jwks", ", allow_insecure_http: true"), "", ""},
		{"jwks plain http on loopback", "", jwt("http://127.0.0.1:8080/jwks", ""), "", ""},
		{"jwks plain http on localhost", "", jwt("http://localhost/jwks", ""), "", ""},
		{"bad allowed host", "", "admin: {allowed_hosts: [\"admin.example.com:9901\", \"ok.example.com\"]}\n", "", "admin.allowed_hosts[0]: \"admin.example.com:9901\" is not a host name"},
		{"bad token env", "", "admin: {token_env: \"ADMIN TOKEN\"}\n", "", "admin.token_env: \"ADMIN TOKEN\" is not an environment variable name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(base, "%s", tt.listen, 1)
			src = strings.Replace(src, "upstreams:", tt.extra+"upstreams:", 1)
			f, err := Parse("w.yaml", []byte(src))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := f.Warnings.Error()
			if len(f.Warnings) == 0 {
				got = ""
			}
			if tt.warn == "" && got != "" {
				t.Fatalf("unexpected warnings: %s", got)
			}
			if !strings.Contains(got, tt.warn) {
				t.Fatalf("warnings %q, want %q", got, tt.warn)
			}
		})
	}
}

func TestSidecarAdminAccessWarning(t *testing.T) {
	s, err := ParseSidecar("s.yaml", []byte(`version: 1
identity: {cert_file: c.pem, key_file: k.pem, bundle_file: b.pem}
inbound: {listen: ":15443", forward_to: "127.0.0.1:7001", allow: ["spiffe://example.org/ns/a/sa/b"]}
admin: ":15000"
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings.Error(), "admin_access.token_env") {
		t.Fatalf("warnings %v", s.Warnings)
	}
}
