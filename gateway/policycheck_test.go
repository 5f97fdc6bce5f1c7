package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
	var runs sync.WaitGroup
	src := &fedSource{feed: make(chan routes.Fragment), results: make(chan error), runs: &runs}
	te := startEdge(t, file, func(o *EdgeOptions) {
		o.RouteSource = func(routes.KubernetesProvider, *slog.Logger) (RouteSource, error) { return src, nil }
	})
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
