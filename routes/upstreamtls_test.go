package routes

import (
	"strings"
	"testing"
)

func TestUpstreamTLSErrors(t *testing.T) {
	with := func(tls string) string {
		return strings.Replace(base, `endpoints: ["127.0.0.1:7001"]`, "endpoints: [\"127.0.0.1:7001\"]\n    scheme: https\n    tls: "+tls, 1)
	}
	for _, tc := range []struct {
		desc, file string
		want       string // "": valid
	}{
		{"server name, system roots", with(`{server_name: orders.internal}`), ""},
		{"server name and SANs", with(`{server_name: orders.internal, subject_alt_names: [{hostname: "*.internal"}, {uri: "spiffe://example.org/ns/a/sa/b"}]}`), ""},
		{"needs https", strings.Replace(with(`{server_name: orders.internal}`), "scheme: https", "scheme: http", 1),
			`t.yaml:6:10: upstreams.orders.tls: needs scheme: https`},
		{"server name with a port", with(`{server_name: "orders.internal:443"}`),
			`t.yaml:6:24: upstreams.orders.tls.server_name: "orders.internal:443" is not a host name (lower case, no wildcard, no port)`},
		{"wildcard server name", with(`{server_name: "*.internal"}`),
			`t.yaml:6:24: upstreams.orders.tls.server_name: "*.internal" is not a host name (lower case, no wildcard, no port)`},
		{"ca_file and ca_pem", with(`{ca_file: ca.pem, ca_pem: "x"}`),
			`t.yaml:6:36: upstreams.orders.tls.ca_pem: ca_file and ca_pem are exclusive: use one`},
		{"ca_pem garbage", with(`{ca_pem: "garbage"}`),
			`t.yaml:6:19: upstreams.orders.tls.ca_pem: not a CA bundle: trailing data that is not PEM`},
		{"SAN with both", with(`{subject_alt_names: [{hostname: a.example.com, uri: "spiffe://x/y"}]}`),
			`t.yaml:6:31: upstreams.orders.tls.subject_alt_names[0]: needs exactly one of hostname and uri`},
		{"SAN with neither", with(`{subject_alt_names: [{}]}`),
			`t.yaml:6:31: upstreams.orders.tls.subject_alt_names[0]: needs exactly one of hostname and uri`},
		{"SAN URI not absolute", with(`{subject_alt_names: [{uri: "/ns/a"}]}`),
			`t.yaml:6:37: upstreams.orders.tls.subject_alt_names[0].uri: "/ns/a" is not an absolute URI (scheme:rest, such as spiffe://example.org/ns/a/sa/b)`},
		{"SAN hostname upper case", with(`{subject_alt_names: [{hostname: A.example.com}]}`),
			`t.yaml:6:42: upstreams.orders.tls.subject_alt_names[0].hostname: "A.example.com" is not a host name (lower case; a wildcard only as *.)`},
		{"unknown key", with(`{sni: a.example.com}`), `t.yaml:6:11: upstreams.orders.tls.sni: unknown key`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.file))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("got %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestUpstreamTLSMeshRefused(t *testing.T) {
	f := strings.Replace(base, `endpoints: ["127.0.0.1:7001"]`, "endpoints: [\"127.0.0.1:7001\"]\n    mesh_identity: spiffe://example.org/ns/a/sa/b\n    tls: {server_name: a.example.com}", 1)
	_, err := Parse("t.yaml", []byte(f))
	if err == nil || !strings.Contains(err.Error(), "upstreams.orders.tls: mesh upstreams are verified by their SPIFFE ID (mesh_identity): leave tls out") {
		t.Fatalf("got %v", err)
	}
}
