package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// adminGet GETs path on the edge's admin listener.
func adminGet(t *testing.T, e *edge, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.Addr("admin") + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A route that matches on a shared-secret header (X-Internal-Token) or a
// query credential (access_token), or a split target chosen by an
// Authorization value: the values are credentials, and /config shows
// typed maps' values without looking at their keys, /routes (the
// dashboard's source) shows them as written.
func TestRouteMatchCredentialsNotShown(t *testing.T) {
	up := newRecordingUpstream(t)
	e := startEdge(t, header+fmt.Sprintf(`upstreams:
  u: {endpoints: [%q]}
  v: {endpoints: [%q]}
routes:
  - name: internal
    match: {path_prefix: /internal, headers: {X-Internal-Token: hunter2-match-header}, query: {access_token: hunter2-match-query}}
    upstream: u
  - name: canary
    match: {path_prefix: /}
    split:
      - {upstream: u, weight: 1}
      - {upstream: v, weight: 1, headers: {Authorization: "Bearer hunter2-split"}}
`, up.addr(), up.addr()))
	for _, path := range []string{"/config", "/routes"} {
		body := adminGet(t, e, path)
		if strings.Contains(body, "hunter2") {
			t.Errorf("%s shows a credential a route matches on:\n%s", path, body)
		}
	}
}

// A refused reload's error is logged, returned, and shown on /config as
// last_reload.error. Values that hold a credential must be masked there as
// jwks_url and ext_authz URLs already are: an upstream endpoint or a Redis
// address written with userinfo, an OTLP endpoint, an ACME directory or
// on-demand ask URL that is refused for its scheme.
func TestRefusalMessagesQuoteNoCredential(t *testing.T) {
	up := newRecordingUpstream(t)
	good := header + fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", up.addr())
	cases := map[string]string{
		"upstream endpoint userinfo":      fmt.Sprintf("upstreams:\n  u: {endpoints: [\"ops:hunter2-ep@%s\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", up.addr()),
		"upstream endpoint url":           fmt.Sprintf("upstreams:\n  u: {endpoints: [\"http://ops:hunter2-epurl@%s\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", up.addr()),
		"redis addrs userinfo":            fmt.Sprintf("redis: {addrs: [\"default:hunter2-addr@127.0.0.1:6379\"], on_error: allow}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", up.addr()),
		"otlp endpoint scheme":            fmt.Sprintf("tracing: {otlp_endpoint: \"grpc://otel:hunter2-otlp@collector:4317/?api_key=hunter2-otlpq\"}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", up.addr()),
		"acme directory_url http":         fmt.Sprintf("listen: {https: \"127.0.0.1:0\"}\ntls: {acme: {email: a@example.com, hosts: [www.example.com], cache_dir: %q, directory_url: \"http://acct:hunter2-acme@acme.internal/dir\"}}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", t.TempDir(), up.addr()),
		"acme on_demand ask scheme":       fmt.Sprintf("listen: {https: \"127.0.0.1:0\"}\ntls: {acme: {email: a@example.com, hosts: [www.example.com], cache_dir: %q, on_demand: {ask: \"ftp://ask:hunter2-ask@ask.internal/check?token=hunter2-askq\"}}}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", t.TempDir(), up.addr()),
		"ext_authz grpc_address userinfo": fmt.Sprintf("authenticators:\n  x: {ext_authz: {grpc_address: \"svc:hunter2-grpc@127.0.0.1:9191\"}}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, auth: x, upstream: u}\n", up.addr()),
		// A plugin's refusal quotes the value at fault.
		"rewrite target userinfo": fmt.Sprintf("plugins:\n  rw: {use: rewrite, config: {rules: [{match: '^(.*)$', replace: 'https://ops:hunter2-rw@x.example$1'}]}}\nupstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, plugins: [rw], upstream: u}\n", up.addr()),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			e, logs := startLoggingEdge(t, good)
			// The header's listen line is replaced where the case has its own.
			cfg := header + bad
			if strings.HasPrefix(bad, "listen:") {
				cfg = strings.Replace(header, `listen: {http: "127.0.0.1:0", admin: "127.0.0.1:0"}`, `listen: {http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0"}`, 1) + bad[strings.Index(bad, "\n")+1:]
			}
			writeAtomically(t, e.path, cfg)
			err := e.Reload(context.Background())
			if err == nil {
				t.Fatalf("the file was accepted; the case needs a refusal:\n%s", cfg)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the refusal quotes a credential: %v", err)
			}
			if body := adminGet(t, e, "/config"); strings.Contains(body, "hunter2") {
				i := strings.Index(body, "hunter2")
				t.Errorf("/config last_reload shows a credential: ...%s...", body[max(0, i-120):min(len(body), i+40)])
			}
			if strings.Contains(logs.String(), "hunter2") {
				t.Errorf("the log shows a credential")
			}
		})
	}
}

// /config masks plugin configs by key name. Inside an out-of-tree
// plugin's config (or a stock one), credentials still show when the
// credential-named key holds a list or a number, when the header is named
// X-Authorization, and in a relative URL's query or a URL's fragment.
func TestPluginConfigCredentialsNotShown(t *testing.T) {
	f, err := routes.Parse("causeway.yaml", []byte(header+`plugins:
  p:
    use: headers
    config:
      request:
        set: {X-Authorization: "Bearer hunter2-xauth"}
  q:
    use: rewrite
    config:
      rules:
        - {match: "^/old$", replace: "/login?access_token=hunter2-relq", redirect: 302}
        - {match: "^/frag$", replace: "https://idp.example/cb#access_token=hunter2-frag", redirect: 302}
        - {match: "^/semi$", replace: "https://idp.example/cb?a=1;token=hunter2-semi", redirect: 302}
  custom:
    use: vault
    config:
      api_keys: [hunter2-list-a, hunter2-list-b]
      password: 123456789
      client_secret: {primary: hunter2-nested}
upstreams:
  u: {endpoints: ["127.0.0.1:1"]}
routes:
  - {name: r, match: {path_prefix: /}, plugins: [p, q], upstream: u}
`))
	if err != nil {
		t.Fatal(err)
	}
	v, err := routes.View(f)
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprintf("%v", v)
	for _, s := range []string{"hunter2-xauth", "hunter2-relq", "hunter2-frag", "hunter2-semi", "hunter2-list-a", "123456789", "hunter2-nested"} {
		if strings.Contains(out, s) {
			t.Errorf("/config would show %s", s)
		}
	}
}

// A reload hashes the bytes it read, then builds from a second read of the
// file. When the file is replaced in between, the generation built from the
// new content is recorded with the hash of the old one; when the file then
// goes back to that old content, the watcher's reload takes it for
// unchanged and skips it: the edge serves a configuration the file no
// longer holds, until the next change or SIGHUP.
func TestReloadDuringReplacementNeverGoesStale(t *testing.T) {
	up := newRecordingUpstream(t)
	cfg := func(name string) string {
		return header + fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: %s, match: {path_prefix: /}, upstream: u}\n", up.addr(), name)
	}
	e := startEdge(t, cfg("b"))
	dir := filepath.Dir(e.path)
	put := func(n string) {
		tmp := filepath.Join(dir, fmt.Sprintf("%s.%d.tmp", n, time.Now().UnixNano()))
		if err := os.WriteFile(tmp, []byte(cfg(n)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, e.path); err != nil {
			t.Fatal(err)
		}
	}
	active := func() string { return e.Active().Routes[0].Name }
	deadline := time.Now().Add(20 * time.Second)
	for trial := 0; time.Now().Before(deadline); trial++ {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // SIGHUPs while the file flips
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
					_ = e.Reload(context.Background())
				}
			}
		}()
		for i := 0; i < 200; i++ {
			put([]string{"b", "c"}[i%2])
		}
		close(stop)
		<-done
		put("b")
		if !waitFor(2*time.Second, func() bool { return active() == "b" }) {
			t.Fatalf("trial %d: the file holds route b but the edge serves route %q (and stays so)", trial, active())
		}
	}
}

// A refused file's access log must not be created. The build checks
// whether the path exists with Lstat, so a path that is a dangling symlink
// (a log directory rotated away, a /var/log link whose target is not made
// yet) counts as existing: OpenFile(O_CREATE) creates the link's target,
// and the undo of the refused file does not remove it.
func TestRefusedReloadLeavesNoFileThroughSymlink(t *testing.T) {
	up := newRecordingUpstream(t)
	e := startEdge(t, header+fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: u}\n", up.addr()))
	dir := t.TempDir()
	target := filepath.Join(dir, "target.log")
	link := filepath.Join(dir, "access.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(header, `access_log: {output: "off"}`, fmt.Sprintf("access_log: {output: %q}", link), 1) +
		fmt.Sprintf("upstreams:\n  u: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, plugins: [nope], upstream: u}\nplugins:\n  nope: {use: no-such-plugin}\n", up.addr())
	writeAtomically(t, e.path, bad)
	if err := e.Reload(context.Background()); err == nil {
		t.Fatal("the file with an unknown plugin was accepted")
	}
	if _, err := os.Stat(target); err == nil {
		t.Errorf("the refused file's access log %s was created (through the symlink %s)", target, link)
	}
}
