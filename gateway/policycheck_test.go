package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/causewayhq/causeway/routes"
)

// policyFrag is what the Kubernetes provider hands the edge's policy
// check: a policy's entries and one route that uses them.
func policyFrag(auth map[string]routes.Authenticator, plugins map[string]routes.PluginInst, route routes.Route) routes.Fragment {
	route.Name, route.Upstream = "k8s.ns.policy.p.check", "k8s.ns.policy.p.check"
	route.Match = routes.Match{Host: "policy-check.invalid", PathPrefix: "/"}
	return routes.Fragment{
		Routes:         []routes.Route{route},
		Upstreams:      map[string]routes.Upstream{route.Upstream: {Endpoints: []string{"127.0.0.1:9"}}},
		Authenticators: auth,
		Plugins:        plugins,
	}
}

func pluginConfig(t *testing.T, yml string) routes.Raw {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(yml), &doc); err != nil {
		t.Fatal(err)
	}
	return routes.Raw{Node: doc.Content[0], Path: "plugins.k8s.ns.policy.p.plugin.0.config"}
}

// The edge's policy check builds a policy's entries as a generation build
// would, against the file it serves: what the routes model alone cannot
// see (an HMAC secret too short, a plugin's bad config, htpasswd lines
// that do not parse) is refused there, without the secret in the message;
// a changed routes file is what later checks see.
func TestPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	sum := sha256.Sum256([]byte("ops-key"))
	keys := filepath.Join(dir, "corp.keys")
	writeFile(t, keys, "ops:"+hex.EncodeToString(sum[:])+"\n")
	file := listenHeader + `
authenticators:
  corp: {api_key: {keys_file: ` + keys + `}}
providers:
  kubernetes: {kubeconfig: ""}
`
	te, _ := startFedEdge(t, file)
	const secret = "only-ten-b"
	okKeys := []byte("alice:" + hex.EncodeToString(sum[:]) + "\n")
	tests := []struct {
		name    string
		frag    routes.Fragment
		wantErr string // "" for accepted
	}{
		{"the file's authenticator by name", policyFrag(nil, nil, routes.Route{Auth: routes.StringList{"corp"}}), ""},
		{"a name the file lacks", policyFrag(nil, nil, routes.Route{Auth: routes.StringList{"sso"}}), `undefined authenticator "sso"`},
		{"API keys held in memory", policyFrag(map[string]routes.Authenticator{"k8s.a": {APIKey: &routes.APIKey{Keys: okKeys}, SecretsFrom: "Secret ns/keys"}}, nil,
			routes.Route{Auth: routes.StringList{"k8s.a"}}), ""},
		{"API keys that do not parse name the Secret", policyFrag(map[string]routes.Authenticator{"k8s.a": {APIKey: &routes.APIKey{Keys: []byte("alice\n")}, SecretsFrom: "Secret ns/keys"}}, nil,
			routes.Route{Auth: routes.StringList{"k8s.a"}}), "Secret ns/keys:1"},
		{"an HMAC secret too short for HS256", policyFrag(map[string]routes.Authenticator{"k8s.j": {JWT: &routes.JWT{Algorithms: []string{"HS256"}, HMACSecret: []byte(secret)}}}, nil,
			routes.Route{Auth: routes.StringList{"k8s.j"}}), "needs at least 32"},
		{"htpasswd lines that do not parse", policyFrag(map[string]routes.Authenticator{"k8s.b": {Basic: &routes.Basic{Htpasswd: []byte("bob:" + secret + "\n")}, SecretsFrom: "Secret ns/users"}}, nil,
			routes.Route{Auth: routes.StringList{"k8s.b"}}), "Secret ns/users"},
		{"a plugin's bad config", policyFrag(nil, map[string]routes.PluginInst{"k8s.p": {Use: "headers", Config: pluginConfig(t, `{request: {set: {Host: evil.example}}}`)}},
			routes.Route{Plugins: []string{"k8s.p"}}), "Host"},
		{"an unknown plugin", policyFrag(nil, map[string]routes.PluginInst{"k8s.p": {Use: "no-such-plugin"}},
			routes.Route{Plugins: []string{"k8s.p"}}), "no-such-plugin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // the second answer is the memo's: the same
				err := te.sources.checkPolicy(tc.frag)
				switch {
				case tc.wantErr == "" && err != nil:
					t.Fatalf("refused: %v", err)
				case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				case err != nil && strings.Contains(err.Error(), secret):
					t.Fatalf("the error shows the secret: %v", err)
				}
			}
		})
	}

	// The file gains "sso": a check after the reload sees it.
	writeFile(t, te.path, strings.Replace(file, "authenticators:\n", "authenticators:\n  sso: {api_key: {keys_file: "+keys+"}}\n", 1))
	if err := te.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := te.sources.checkPolicy(policyFrag(nil, nil, routes.Route{Auth: routes.StringList{"sso"}})); err != nil {
		t.Fatalf("after the file gained the authenticator: %v", err)
	}
}

// The check's memo is keyed by what a policy holds, behind every pointer:
// the secrets of an authenticator live behind one (*routes.APIKey), and a
// key made of the pointer's address would answer a rotated Secret with
// the old Secret's result whenever the new value is allocated where the
// old one was (a collected snapshot's memory, reused), and would never
// hit for an unchanged policy of the next snapshot, whose values are new
// allocations. Here the same pointer gains keys that do not parse, and an
// equal policy at new addresses is answered from the memo.
func TestPolicyCheckMemoIsKeyedByContent(t *testing.T) {
	sum := sha256.Sum256([]byte("alice-key"))
	file := listenHeader + `
providers:
  kubernetes: {kubeconfig: ""}
`
	te, _ := startFedEdge(t, file)
	frag := func(keys string) (routes.Fragment, *routes.APIKey) {
		k := &routes.APIKey{Header: "X-Key", Keys: []byte(keys)}
		return policyFrag(map[string]routes.Authenticator{"k8s.a": {APIKey: k, SecretsFrom: "Secret ns/keys"}}, nil,
			routes.Route{Auth: routes.StringList{"k8s.a"}}), k
	}
	good := "alice:" + hex.EncodeToString(sum[:]) + "\n"
	memo := func() int {
		te.sources.mu.Lock()
		defer te.sources.mu.Unlock()
		return len(te.sources.checked)
	}

	f, k := frag(good)
	if err := te.sources.checkPolicy(f); err != nil {
		t.Fatalf("good keys refused: %v", err)
	}
	// The Secret rotated to keys that do not parse, at the same address.
	k.Keys = []byte("alice\n")
	if err := te.sources.checkPolicy(f); err == nil || !strings.Contains(err.Error(), "Secret ns/keys:1") {
		t.Fatalf("keys that do not parse, where good ones were: %v, want the parse error", err)
	}
	// And back: the memo answers it as before, without growing.
	k.Keys = []byte(good)
	if err := te.sources.checkPolicy(f); err != nil {
		t.Fatalf("good keys again: %v", err)
	}
	n := memo()
	// Snapshots to come: equal policies, new allocations.
	for range 50 {
		again, _ := frag(good)
		if err := te.sources.checkPolicy(again); err != nil {
			t.Fatalf("an equal policy: %v", err)
		}
		bad, _ := frag("alice\n")
		if err := te.sources.checkPolicy(bad); err == nil {
			t.Fatal("bad keys accepted")
		}
	}
	if got := memo(); got != n {
		t.Fatalf("the memo grew from %d to %d entries for policies it had checked", n, got)
	}
}

// policyScaleFragment is what the provider checks a Gateway-wide policy
// with at 10,000 HTTPRoutes: every route of scaleFragment under the
// policy's rate limit (its upstreams without endpoints, as checkApplied
// sends them).
func policyScaleFragment() routes.Fragment {
	frag := scaleFragment()
	const limit = "k8s.scale.policy.gw-limits.ratelimit.0"
	frag.RateLimits = map[string]routes.RateLimit{limit: {Key: "client_ip", Limit: 100000, Per: routes.Duration(time.Second), Burst: 100000}}
	for i := range frag.Routes {
		frag.Routes[i].RateLimit = routes.StringList{limit}
	}
	for name, u := range frag.Upstreams {
		u.Endpoints = nil
		frag.Upstreams[name] = u
	}
	return frag
}

// BenchmarkPolicyCheck10k is the edge's check of a Gateway-wide policy
// with the 20,000 model routes it applies to, as a route change makes it
// (a route the memo has not seen; go test -run '^$' -bench PolicyCheck10k
// ./gateway).
func BenchmarkPolicyCheck10k(b *testing.B) {
	benchPolicyCheck(b, true)
}

// BenchmarkPolicyCheckMemo10k is the same check when nothing it is given
// changed (an endpoint change): only the memo's key is computed.
func BenchmarkPolicyCheckMemo10k(b *testing.B) {
	benchPolicyCheck(b, false)
}

func benchPolicyCheck(b *testing.B, changeRoute bool) {
	te, _ := startFedEdge(b, listenHeader+"providers:\n  kubernetes: {kubeconfig: \"\"}\n")
	frag := policyScaleFragment()
	if err := te.sources.checkPolicy(frag); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		next := frag
		next.Routes = slices.Clone(frag.Routes)
		if changeRoute {
			i++
			next.Routes[0].Match.Path = fmt.Sprintf("/p0-%d", i)
		}
		if err := te.sources.checkPolicy(next); err != nil {
			b.Fatal(err)
		}
	}
}
