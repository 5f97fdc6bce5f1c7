package routes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sidecarBase is the example of docs/mesh.md ("The sidecar file") without its
// optional keys; each case breaks it in one place.
const sidecarBase = `version: 1
identity: { cert_file: mesh/orders.pem, key_file: mesh/orders-key.pem, bundle_file: mesh/bundle.pem }
inbound:
  listen: ":15443"
  forward_to: "127.0.0.1:7001"
  allow: ["spiffe://example.org/ns/edge/sa/gateway"]
outbound:
  listen: "127.0.0.1:15001"
  services:
    payments: { endpoints: ["127.0.0.1:16443"], identity: spiffe://example.org/ns/shop/sa/payments }
admin: "127.0.0.1:15000"
`

func TestSidecarLoadsTheDocumentedExample(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(path, []byte(sidecarBase), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSidecar(path)
	if err != nil {
		t.Fatal(err)
	}
	// Relative paths are relative to the sidecar file.
	if s.Identity.CertFile != filepath.Join(filepath.Dir(path), "mesh/orders.pem") || s.Inbound.ForwardTo != "127.0.0.1:7001" || s.Inbound.Allow[0] != "spiffe://example.org/ns/edge/sa/gateway" {
		t.Fatalf("decoded %+v %+v", s.Identity, s.Inbound)
	}
	pay := s.Outbound.Services["payments"]
	if pay.Identity != "spiffe://example.org/ns/shop/sa/payments" || pay.Endpoints[0] != "127.0.0.1:16443" {
		t.Fatalf("payments: %+v", pay)
	}
	if got := s.At("outbound.services.payments.identity"); got.Line != 10 {
		t.Fatalf("position of payments.identity: %+v", got)
	}
}

func TestSidecarDefaults(t *testing.T) {
	s, err := ParseSidecar("s.yaml", []byte(`version: 1
identity: {cert_file: c.pem, key_file: k.pem, bundle_file: b.pem}
inbound: {forward_to: "127.0.0.1:7001", allow_trust_domains: [example.org]}
outbound:
  services:
    payments: {endpoints: ["10.0.0.5:15443"], identity: "spiffe://example.org/ns/shop/sa/payments"}
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"inbound.listen", s.Inbound.Listen, DefaultSidecarInbound},
		{"inbound.timeout", s.Inbound.Timeout.D(), DefaultUpstreamTimeout},
		{"outbound.listen", s.Outbound.Listen, DefaultSidecarOutbound},
		{"admin", s.Admin, DefaultSidecarAdmin},
		{"service balance", s.Outbound.Services["payments"].Balance, DefaultBalance},
		{"service timeout", s.Outbound.Services["payments"].Timeout.D(), DefaultUpstreamTimeout},
		{"server.read_header_timeout", s.Server.ReadHeaderTimeout.D(), DefaultReadHeaderTimeout},
		{"server.max_header_bytes", s.Server.MaxHeaderBytes, DefaultMaxHeaderBytes},
		{"access_log.output", s.AccessLog.Output, "stdout"},
		{"access_log.sample", s.AccessLog.Sample, 1.0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("%v, want %v", tc.got, tc.want)
			}
		})
	}
	t.Run("set values are kept", func(t *testing.T) {
		s, err := ParseSidecar("s.yaml", []byte(strings.Replace(sidecarBase, `forward_to: "127.0.0.1:7001"`, "forward_to: \"127.0.0.1:7001\"\n  timeout: 5s", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if s.Inbound.Timeout.D() != 5*time.Second || s.Inbound.Listen != ":15443" {
			t.Fatalf("inbound %+v", s.Inbound)
		}
	})
	t.Run("peers of federated_bundles' domains may be allowed and called", func(t *testing.T) {
		file := strings.Replace(sidecarBase, "bundle_file: mesh/bundle.pem }", "bundle_file: mesh/bundle.pem, trust_domain: prod.example.org, federated_bundles: {example.org: mesh/example-bundle.pem} }", 1)
		if file == sidecarBase {
			t.Fatal("test setup: identity line not found")
		}
		s, err := ParseSidecar("s.yaml", []byte(file))
		if err != nil {
			t.Fatal(err)
		}
		if s.Identity.FederatedBundles["example.org"] != "mesh/example-bundle.pem" {
			t.Fatalf("identity %+v", s.Identity)
		}
	})
	t.Run("an inbound-only sidecar has no outbound", func(t *testing.T) {
		beforeOutbound, _, _ := strings.Cut(sidecarBase, "outbound:")
		s, err := ParseSidecar("s.yaml", []byte(beforeOutbound))
		if err != nil {
			t.Fatal(err)
		}
		if s.Outbound != nil {
			t.Fatalf("outbound %+v", s.Outbound)
		}
	})
}

func TestSidecarErrors(t *testing.T) {
	r := func(from, to string) string {
		if !strings.Contains(sidecarBase, from) {
			t.Fatalf("test setup: %q not in the base file", from)
		}
		return strings.Replace(sidecarBase, from, to, 1)
	}
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"empty file", "", []string{"s.yaml:1:1: file is empty"}},
		{"not a mapping", "- a\n", []string{"s.yaml:1:1: the file must be a mapping with keys such as version, identity, inbound and outbound"}},
		{"two documents", sidecarBase + "---\nversion: 1\n", []string{"s.yaml:12:1: more than one YAML document: a sidecar file holds exactly one"}},
		{"syntax error", "version: 1\ninbound: [\n", []string{"s.yaml:2:1: YAML syntax: did not find expected node content"}},
		{"unknown key with suggestion", sidecarBase + "inbond: {}\n", []string{`s.yaml:12:1: inbond: unknown key (did you mean "inbound"?)`}},
		{"unknown nested key, and the key it leaves out", r("forward_to:", "forward:"), []string{
			`s.yaml:4:3: inbound.forward_to: is required: the local service's host:port`,
			`s.yaml:5:3: inbound.forward: unknown key`,
		}},
		{"service accounts need the trust domain, and a NAMESPACE/NAME", r(`allow: ["spiffe://example.org/ns/edge/sa/gateway"]`, `allow_service_accounts: [edge/gateway, gateway, "Edge/x"]`), []string{
			"s.yaml:6:28: inbound.allow_service_accounts[0]: needs identity.trust_domain: a ServiceAccount's ID is spiffe://TRUST_DOMAIN/ns/edge/sa/gateway",
			`s.yaml:6:42: inbound.allow_service_accounts[1]: "gateway" is not NAMESPACE/NAME of a ServiceAccount`,
			`s.yaml:6:51: inbound.allow_service_accounts[2]: "Edge/x" is not NAMESPACE/NAME of a ServiceAccount`,
		}},
		{"a service account also in allow", strings.Replace(r(`allow: ["spiffe://example.org/ns/edge/sa/gateway"]`, "allow: [\"spiffe://example.org/ns/edge/sa/gateway\"]\n  allow_service_accounts: [edge/gateway]"),
			"bundle_file: mesh/bundle.pem }", "bundle_file: mesh/bundle.pem, trust_domain: example.org }", 1), []string{
			"s.yaml:6:11: inbound.allow[0]: spiffe://example.org/ns/edge/sa/gateway is listed twice",
		}},
		{"wrong version", r("version: 1", "version: 2"), []string{"s.yaml:1:10: version: must be 1 (found 2)"}},
		{"identity files missing", r("identity: { cert_file: mesh/orders.pem, key_file: mesh/orders-key.pem, bundle_file: mesh/bundle.pem }", "identity: {cert_file: c.pem}"), []string{
			"s.yaml:2:11: identity.key_file: is required",
			"s.yaml:2:11: identity.bundle_file: is required",
		}},
		{"neither inbound nor outbound", "version: 1\nidentity: {cert_file: c, key_file: k, bundle_file: b}\n", []string{"s.yaml:1:1: a sidecar needs inbound, outbound or both"}},
		{"bad inbound listen", r(`listen: ":15443"`, `listen: "15443"`), []string{`s.yaml:4:11: inbound.listen: "15443" is not host:port (e.g. ":8080" or "127.0.0.1:8080")`}},
		{"forward_to missing", r(`  forward_to: "127.0.0.1:7001"`+"\n", ""), []string{"s.yaml:4:3: inbound.forward_to: is required: the local service's host:port"}},
		{"forward_to off the host", r(`forward_to: "127.0.0.1:7001"`, `forward_to: "10.1.2.3:7001"`), []string{`s.yaml:5:15: inbound.forward_to: "10.1.2.3:7001" is not a loopback address: the hop to the local service is plain HTTP and must not leave the host`}},
		{"forward_to without port", r(`forward_to: "127.0.0.1:7001"`, `forward_to: "127.0.0.1"`), []string{`s.yaml:5:15: inbound.forward_to: "127.0.0.1" is not host:port`}},
		{"nobody allowed", r(`  allow: ["spiffe://example.org/ns/edge/sa/gateway"]`+"\n", ""), []string{"s.yaml:4:3: inbound.allow: list the caller SPIFFE IDs allowed in (or inbound.allow_trust_domains, inbound.allow_service_accounts): with none every caller is refused"}},
		{"allow entry not a SPIFFE ID", r(`allow: ["spiffe://example.org/ns/edge/sa/gateway"]`, `allow: ["https://example.org/gateway", "spiffe://Example.org/x"]`), []string{
			`s.yaml:6:11: inbound.allow[0]: "https://example.org/gateway" is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): scheme is missing or invalid`,
			`s.yaml:6:42: inbound.allow[1]: "spiffe://Example.org/x" is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`,
		}},
		{"allow entry twice", r(`allow: ["spiffe://example.org/ns/edge/sa/gateway"]`, `allow: ["spiffe://example.org/ns/edge/sa/gateway", "spiffe://example.org/ns/edge/sa/gateway"]`), []string{
			`s.yaml:6:54: inbound.allow[1]: spiffe://example.org/ns/edge/sa/gateway is listed twice`,
		}},
		{"allow outside identity.trust_domain", r("bundle_file: mesh/bundle.pem }", "bundle_file: mesh/bundle.pem, trust_domain: prod.example.org }"), []string{
			`s.yaml:6:11: inbound.allow[0]: spiffe://example.org/ns/edge/sa/gateway is outside the trust domain prod.example.org: its certificate could never verify against this bundle`,
			`s.yaml:10:59: outbound.services.payments.identity: spiffe://example.org/ns/shop/sa/payments is outside the trust domain prod.example.org: it could never verify against this bundle`,
		}},
		{"bad identity.trust_domain", r("bundle_file: mesh/bundle.pem }", "bundle_file: mesh/bundle.pem, trust_domain: Example }"), []string{
			`s.yaml:2:116: identity.trust_domain: "Example" is not a trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`,
		}},
		{"bad allow_trust_domains", r(`allow: ["spiffe://example.org/ns/edge/sa/gateway"]`, `allow_trust_domains: ["exa mple.org"]`), []string{
			`s.yaml:6:25: inbound.allow_trust_domains[0]: "exa mple.org" is not a trust domain: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`,
		}},
		{"outbound on every interface", r(`listen: "127.0.0.1:15001"`, `listen: ":15001"`), []string{
			`s.yaml:8:11: outbound.listen: ":15001" is not a loopback address: the outbound listener takes unauthenticated HTTP and sends it with this workload's identity, so only the local service may reach it`,
		}},
		{"outbound on a routable address", r(`listen: "127.0.0.1:15001"`, `listen: "10.0.0.1:15001"`), []string{
			`s.yaml:8:11: outbound.listen: "10.0.0.1:15001" is not a loopback address: the outbound listener takes unauthenticated HTTP and sends it with this workload's identity, so only the local service may reach it`,
		}},
		{"no services", r(`    payments: { endpoints: ["127.0.0.1:16443"], identity: spiffe://example.org/ns/shop/sa/payments }`+"\n", ""), []string{
			`s.yaml:9:12: outbound.services: list the services the local service calls (or take them from the cluster: outbound.kubernetes)`,
		}},
		{"service without endpoints or identity", r(`{ endpoints: ["127.0.0.1:16443"], identity: spiffe://example.org/ns/shop/sa/payments }`, `{ balance: random }`), []string{
			`s.yaml:10:15: outbound.services.payments.endpoints: is required: the service's sidecar addresses (host:port)`,
			`s.yaml:10:15: outbound.services.payments.identity: is required: the SPIFFE ID the service's sidecars must present`,
			`s.yaml:10:26: outbound.services.payments.balance: unknown balancer "random" (one of round_robin, weighted, least_request, p2c_ewma, ring_hash)`,
		}},
		{"service identity not a SPIFFE ID", r("identity: spiffe://example.org/ns/shop/sa/payments", "identity: payments"), []string{
			`s.yaml:10:59: outbound.services.payments.identity: "payments" is not a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH): scheme is missing or invalid`,
		}},
		{"bad and duplicate endpoints", r(`endpoints: ["127.0.0.1:16443"]`, `endpoints: ["127.0.0.1:16443", "127.0.0.1:16443", "nohost"]`), []string{
			`s.yaml:10:48: outbound.services.payments.endpoints[1]: endpoint "127.0.0.1:16443" is listed twice`,
			`s.yaml:10:67: outbound.services.payments.endpoints[2]: "nohost" is not host:port`,
		}},
		{"bad service name", r("    payments:", "    pay/ments:"), []string{
			`s.yaml:10:16: outbound.services.pay/ments: service name "pay/ments": use letters, digits, '.', '_' and '-' (at most 128)`,
		}},
		{"admin clashes with outbound", r(`admin: "127.0.0.1:15000"`, `admin: "127.0.0.1:15001"`), []string{
			`s.yaml:8:11: outbound.listen: "127.0.0.1:15001" clashes with admin "127.0.0.1:15001": each listener needs a port of its own`,
		}},
		{"inbound on every interface clashes with admin's port", r(`admin: "127.0.0.1:15000"`, `admin: "127.0.0.1:15443"`), []string{
			`s.yaml:4:11: inbound.listen: ":15443" clashes with admin "127.0.0.1:15443": each listener needs a port of its own`,
		}},
		{"bad admin", r(`admin: "127.0.0.1:15000"`, `admin: "localhost"`), []string{`s.yaml:11:8: admin: "localhost" is not host:port (e.g. ":8080" or "127.0.0.1:8080")`}},
		{"server limits checked as in the routes file", sidecarBase + "server: {max_header_bytes: 10}\naccess_log: {sample: 2}\n", []string{
			"s.yaml:12:28: server.max_header_bytes: must be at least 1024 (found 10)",
			"s.yaml:13:22: access_log.sample: must be in (0, 1] (found 2)",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSidecar("s.yaml", []byte(tc.file))
			if err == nil {
				t.Fatal("the file was accepted")
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", err, strings.Join(tc.want, "\n"))
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if _, err := LoadSidecar(filepath.Join(t.TempDir(), "nope.yaml")); err == nil || !strings.Contains(err.Error(), "reading sidecar file") {
			t.Fatalf("err = %v", err)
		}
	})
}

// FuzzParseSidecar: arbitrary bytes must never panic the loader, every
// failure must be a located Errors list, and whatever is accepted must hold
// the invariants the engine relies on.
func FuzzParseSidecar(f *testing.F) {
	f.Add([]byte(sidecarBase))
	f.Add([]byte("version: 1\nidentity: {cert_file: c, key_file: k, bundle_file: b}\ninbound: {forward_to: \"localhost:1\", allow_trust_domains: [a]}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	// Decode errors beside validation errors: both are reported.
	f.Add([]byte("version: 1\nidentity: {cert_file: [a], key_file: b}\ninbound: {allow: x, timeout: soon}\noutbound: {services: {p: {endpoints: a, identity: 5}}}\n"))
	f.Add([]byte("version: 1\nidentty: {}\ninbound: 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSidecar("fuzz.yaml", data)
		if err != nil {
			checkErrorList(t, err)
			return
		}
		if s.Version != 1 || (s.Inbound == nil && s.Outbound == nil) {
			t.Fatalf("invalid file accepted: %+v", s)
		}
		if s.Outbound != nil && !isLoopback(s.Outbound.Listen) {
			t.Fatalf("non-loopback outbound accepted: %q", s.Outbound.Listen)
		}
		if s.Inbound != nil && (len(s.Inbound.Allow)+len(s.Inbound.AllowTrustDomains) == 0 || !isLoopback(s.Inbound.ForwardTo)) {
			t.Fatalf("open or off-host inbound accepted: %+v", s.Inbound)
		}
	})
}
