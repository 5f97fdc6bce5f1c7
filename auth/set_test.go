package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

func keyLine(name, key string) string {
	sum := sha256.Sum256([]byte(key))
	return name + ":" + hex.EncodeToString(sum[:])
}

func apiKeyYAML(t testing.TB, extra string, lines ...string) string {
	path := writeFile(t, "keys.txt", []byte("# partners\n\n"+strings.Join(lines, "\n")+"\n"))
	return "  partners:\n    api_key:\n      keys_file: " + path + extra
}

func TestAPIKeys(t *testing.T) {
	keys := []string{keyLine("acme", "acme-secret-key"), keyLine("globex", "globex-secret-key")}
	tests := []struct {
		name   string
		extra  string
		target string
		header http.Header
		status int
		who    string
		fwd    string // X-Partner at the upstream
		query  string
	}{
		{"default header", "", "/", http.Header{"X-Api-Key": {"acme-secret-key"}}, 204, "acme", "", ""},
		{"second key", "", "/", http.Header{"X-Api-Key": {"globex-secret-key"}}, 204, "globex", "", ""},
		{"unknown key", "", "/", http.Header{"X-Api-Key": {"acme-secret-kez"}}, 401, "", "", ""},
		{"the hash is not the key", "", "/", http.Header{"X-Api-Key": {strings.Split(keys[0], ":")[1]}}, 401, "", "", ""},
		{"missing", "", "/", nil, 401, "", "", ""},
		{"two keys", "", "/", http.Header{"X-Api-Key": {"acme-secret-key", "globex-secret-key"}}, 401, "", "", ""},
		{"oversized", "", "/", http.Header{"X-Api-Key": {strings.Repeat("k", 2000)}}, 401, "", "", ""},
		// Under server.allow_underscore_headers X_Api_Key reaches the edge,
		// and a CGI-style upstream reads it as X-Api-Key: a second copy.
		{"key also spelled with '_'", "", "/", http.Header{"X-Api-Key": {"acme-secret-key"}, "X_api_key": {"globex-secret-key"}}, 401, "", "", ""},
		{"named key also spelled with '_'", "\n      header: X-Partner-Key", "/",
			http.Header{"X-Partner-Key": {"acme-secret-key"}, "X_Partner-key": {"forged"}}, 401, "", "", ""},
		{"named header, forwarded name, spoof removed", "\n      header: X-Partner-Key\n      forward_name: X-Partner", "/",
			http.Header{"X-Partner-Key": {"acme-secret-key"}, "X-Partner": {"globex"}}, 204, "acme", "acme", ""},
		{"query", "\n      query: key", "/p?key=acme-secret-key&x=1", nil, 204, "acme", "", "x=1"},
		{"query kept", "\n      query: key\n      keep_token: true", "/p?key=acme-secret-key", nil, 204, "acme", "", "key=acme-secret-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := parse(t, apiKeyYAML(t, tt.extra, keys...), `{name: r, match: {path_prefix: /}, upstream: up, auth: partners}`)
			fails := failuresVec()
			s := testSet(t, f, Options{Failures: fails})
			h, up := handler(t, s, f, 0)
			w := recorder(h, httptestRequest(tt.target, tt.header))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if tt.status == 401 {
				if ch := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(ch, `ApiKey realm="partners"`) {
					t.Fatalf("challenge %q", ch)
				}
				return
			}
			if up.p.Subject != tt.who || up.p.KeyName != tt.who || up.p.Claims != nil {
				t.Fatalf("principal %+v", up.p)
			}
			if v, ok := up.p.Claim("sub"); !ok || v != tt.who {
				t.Fatalf(`Claim("sub") = %q, %v`, v, ok)
			}
			if up.header.Get("X-Api-Key") != "" || up.header.Get("X-Partner-Key") != "" {
				t.Fatal("the key reached the upstream")
			}
			if got := up.header.Get("X-Partner"); got != tt.fwd {
				t.Fatalf("X-Partner %q, want %q", got, tt.fwd)
			}
			if tt.query != "" && up.query != tt.query {
				t.Fatalf("query %q, want %q", up.query, tt.query)
			}
		})
	}
}

// TestQueryCredentialOneSpelling: a credential read from the query has one
// spelling only. Go's parser skips a pair holding ';', while Rack before 3
// and Python before 3.9.2 split on it, PHP drops the blanks before a name
// and reads '.' as '_' and key[] as key, ASP.NET ignores case: any of these
// beside (or instead of) the exact pair would let the edge verify one
// credential while the upstream reads another. Such a request is refused
// before the upstream, and whichever authenticator wins, no spelling of the
// parameter reaches it.
func TestQueryCredentialOneSpelling(t *testing.T) {
	keys := []string{keyLine("acme", "acme-secret-key"), keyLine("globex", "globex-secret-key")}
	tests := []struct {
		name   string
		target string
		status int
		query  string // at the upstream, on 204
	}{
		{"exact", "/p?key=acme-secret-key&x=1", 204, "x=1"},
		{"other pairs with ';' kept", "/p?f=a;b&key=acme-secret-key", 204, "f=a;b"},
		{"second key after ';'", "/p?x=1;key=globex-secret-key&key=acme-secret-key", 401, ""},
		{"key before ';'", "/p?key=acme-secret-key;x=1", 401, ""},
		{"key after ';' alone", "/p?x=1;key=acme-secret-key", 401, ""},
		{"upper case", "/p?key=acme-secret-key&KEY=globex-secret-key", 401, ""},
		{"upper case alone", "/p?KEY=acme-secret-key", 401, ""},
		{"leading blank", "/p?key=acme-secret-key&+key=globex-secret-key", 401, ""},
		{"encoded leading blank", "/p?key=acme-secret-key&%20key=globex-secret-key", 401, ""},
		{"array", "/p?key=acme-secret-key&key[]=globex-secret-key", 401, ""},
		{"encoded array", "/p?key=acme-secret-key&key%5B0%5D=globex-secret-key", 401, ""},
		{"NUL", "/p?key=acme-secret-key&key%00=globex-secret-key", 401, ""},
		{"encoded name", "/p?key=acme-secret-key&%6Bey=globex-secret-key", 401, ""},
		{"stray percent", "/p?key=acme-secret-key&k%ey=globex-secret-key", 204, "k%ey=globex-secret-key"},
		{"empty", "/p?key=&x=1", 401, ""},
		{"other name", "/p?key=acme-secret-key&keys=1&akey=2", 204, "keys=1&akey=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := parse(t, apiKeyYAML(t, "\n      query: key", keys...), `{name: r, match: {path_prefix: /}, upstream: up, auth: partners}`)
			h, up := handler(t, testSet(t, f, Options{}), f, 0)
			w := do(h, tt.target, nil)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d (upstream got %q)", w.Code, tt.status, up.query)
			}
			if tt.status != 204 {
				if up.calls != 0 {
					t.Fatal("a refused request reached the upstream")
				}
				return
			}
			if up.query != tt.query || up.p.KeyName != "acme" {
				t.Fatalf("upstream query %q as %q, want %q as acme", up.query, up.p.KeyName, tt.query)
			}
		})
	}

	// A route that also takes a bearer token: when the token wins, every
	// spelling of the query key still goes, so nothing an upstream could
	// read as a key it was never shown verified reaches it.
	sg := signerFor(t, "ES256", 0)
	auths := jwtYAML("      public_key_files: ["+pemFile(t, sg.pub)+"]", "ES256") + "\n" +
		apiKeyYAML(t, "\n      query: api_key", keys...)
	f := parse(t, auths, `{name: r, match: {path_prefix: /}, upstream: up, auth: [users, partners]}`)
	h, up := handler(t, testSet(t, f, Options{Now: newClock().Now}), f, 0)
	tok := sg.sign(t, claims(nil), "")
	for _, target := range []string{
		"/p?x=1;api_key=globex-secret-key&y=2",
		"/p?x=1&API_KEY=globex-secret-key&y=2",
		"/p?x=1&api.key=globex-secret-key&y=2",
		"/p?x=1&+api_key%5B%5D=globex-secret-key&y=2",
	} {
		if w := do(h, target, bearer(tok)); w.Code != 204 {
			t.Fatalf("%s: status %d", target, w.Code)
		}
		if up.query != "x=1&y=2" || up.p.Authenticator != "users" {
			t.Fatalf("%s: upstream query %q as %q, want x=1&y=2 as users", target, up.query, up.p.Authenticator)
		}
	}
}

// TestAPIKeysReload: keys are read when the set is built, so a reload (a
// new set from the same file) picks up a changed keys file.
func TestAPIKeysReload(t *testing.T) {
	path := writeFile(t, "keys.txt", []byte(keyLine("acme", "k-one")+"\n"))
	f := parse(t, "  partners:\n    api_key:\n      keys_file: "+path, `{name: r, match: {path_prefix: /}, upstream: up, auth: partners}`)
	s1 := testSet(t, f, Options{})
	h1, _ := handler(t, s1, f, 0)
	if err := os.WriteFile(path, []byte(keyLine("acme", "k-two")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := s1.Files(); len(got) != 1 || got[0] != path {
		t.Fatalf("Files() = %v, want [%s]", got, path)
	}
	s2, err := NewSet(context.Background(), f, s1, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	h2, _ := handler(t, s2, f, 0)
	for _, c := range []struct {
		h    http.Handler
		key  string
		want int
	}{{h1, "k-one", 204}, {h1, "k-two", 401}, {h2, "k-one", 401}, {h2, "k-two", 204}} {
		if w := do(c.h, "/", http.Header{"X-Api-Key": {c.key}}); w.Code != c.want {
			t.Fatalf("key %s: %d, want %d", c.key, w.Code, c.want)
		}
	}
}

// TestMultipleAuthenticators: the route's list is tried in order and the
// first success wins; a failure reports the first credential that was
// there, and the 401 offers every authenticator's challenge.
func TestMultipleAuthenticators(t *testing.T) {
	sg := signerFor(t, "ES256", 0)
	auths := jwtYAML("      public_key_files: ["+pemFile(t, sg.pub)+"]", "ES256") + "\n" +
		apiKeyYAML(t, "\n      forward_name: X-Partner", keyLine("acme", "acme-key"))
	f := parse(t, auths, `{name: r, match: {path_prefix: /}, upstream: up, auth: [users, partners]}`)
	fails := failuresVec()
	s := testSet(t, f, Options{Now: newClock().Now, Failures: fails})
	h, up := handler(t, s, f, 0)
	good := sg.sign(t, claims(nil), "")
	bad := sg.sign(t, claims(map[string]any{"iss": "x"}), "")
	tests := []struct {
		name      string
		header    http.Header
		status    int
		who       string
		challenge []string
		reason    string // label counted, as authenticator/reason
	}{
		{"jwt", bearer(good), 204, "users", nil, ""},
		{"api key", http.Header{"X-Api-Key": {"acme-key"}}, 204, "partners", nil, ""},
		{"both: first wins", http.Header{"Authorization": {"Bearer " + good}, "X-Api-Key": {"acme-key"}}, 204, "users", nil, ""},
		{"bad jwt, good key", http.Header{"Authorization": {"Bearer " + bad}, "X-Api-Key": {"acme-key"}}, 204, "partners", nil, ""},
		{"jwt, and a key spelled with '_'", http.Header{"Authorization": {"Bearer " + good}, "X_api_key": {"acme-key"}}, 204, "users", nil, ""},
		{"nothing", nil, 401, "", []string{`Bearer realm="users"`, `ApiKey realm="partners"`}, "users/missing"},
		{"bad key only", http.Header{"X-Api-Key": {"nope"}}, 401, "",
			[]string{`Bearer realm="users"`, `ApiKey realm="partners", error="invalid_token", error_description="the API key is not valid"`}, "partners/unknown_key"},
		{"bad jwt, bad key", http.Header{"Authorization": {"Bearer " + bad}, "X-Api-Key": {"nope"}}, 401, "",
			[]string{`Bearer realm="users", error="invalid_token", error_description="the token's issuer is not accepted"`, `ApiKey realm="partners"`}, "users/bad_issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up.p = nil
			w := do(h, "/", tt.header)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if tt.status == 204 {
				if up.p.Authenticator != tt.who {
					t.Fatalf("authenticated by %q, want %q", up.p.Authenticator, tt.who)
				}
				// Every credential the route knows is stripped, whichever won.
				if up.header.Get("Authorization") != "" || up.header.Get("X-Api-Key") != "" || up.header.Get("X_api_key") != "" {
					t.Fatal("a credential reached the upstream")
				}
				return
			}
			if got := w.Header().Values("WWW-Authenticate"); strings.Join(got, "\n") != strings.Join(tt.challenge, "\n") {
				t.Fatalf("challenges\n%q\nwant\n%q", got, tt.challenge)
			}
			a, r, _ := strings.Cut(tt.reason, "/")
			if counter(fails, a, r) != 1 {
				t.Fatalf("%s not counted", tt.reason)
			}
		})
	}
}

func TestRequireClaims(t *testing.T) {
	sg := signerFor(t, "HS256", 0)
	t.Setenv("CW_SECRET", string(sg.priv.([]byte)))
	auths := jwtYAML("      hmac_secret_env: CW_SECRET", "HS256") + "\n" + apiKeyYAML(t, "", keyLine("acme", "acme-key"))
	f := parse(t, auths,
		`{name: scoped, match: {path_prefix: /s}, upstream: up, auth: [users, partners], require_claims: {scope: "orders:read", roles: admin, tenant: t1, org.id: "42"}}`)
	fails := failuresVec()
	s := testSet(t, f, Options{Now: newClock().Now, Failures: fails})
	h, _ := handler(t, s, f, 0)
	full := map[string]any{"scope": "profile orders:read email", "roles": []any{"user", "admin"}, "tenant": "t1", "org": map[string]any{"id": 42}}
	tests := []struct {
		name   string
		change map[string]any
		status int
	}{
		{"all present", nil, 204},
		{"scope not in the list", map[string]any{"scope": "profile orders:write"}, 403},
		{"scope as an array", map[string]any{"scope": []any{"orders:read"}}, 204},
		{"scope prefix is not membership", map[string]any{"scope": "orders:read:all"}, 403},
		{"role missing from the array", map[string]any{"roles": []any{"user"}}, 403},
		{"role as a string", map[string]any{"roles": "admin"}, 204},
		{"space-separated only for scope", map[string]any{"roles": "user admin"}, 403},
		{"tenant differs", map[string]any{"tenant": "t2"}, 403},
		{"tenant missing", map[string]any{"tenant": nil}, 403},
		{"nested claim differs", map[string]any{"org": map[string]any{"id": 43}}, 403},
		// A nested array is not a member, however it would print.
		{"scope nested in an array", map[string]any{"scope": []any{[]any{"orders:read"}}}, 403},
		{"role nested in an array", map[string]any{"roles": []any{[]any{"admin"}}}, 403},
		{"role inside an object in the array", map[string]any{"roles": []any{map[string]any{"admin": true}}}, 403},
		// Scope tokens are separated by ASCII spaces only (RFC 6749 §3.3).
		{"scope separated by a tab", map[string]any{"scope": "profile\torders:read"}, 403},
		{"scope separated by a newline", map[string]any{"scope": "profile\norders:read"}, 403},
		{"scope separated by a no-break space", map[string]any{"scope": "profile\u00a0orders:read"}, 403},
		{"scope separated by two spaces", map[string]any{"scope": "profile  orders:read"}, 204},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := claims(full)
			for k, v := range tt.change {
				if v == nil {
					delete(c, k)
				} else {
					c[k] = v
				}
			}
			w := do(h, "/s", bearer(sg.sign(t, c, "")))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if tt.status == 403 {
				want := `Bearer realm="users", error="insufficient_scope", error_description="the credential lacks a required claim"`
				if got := w.Header().Values("WWW-Authenticate"); len(got) != 1 || got[0] != want {
					t.Fatalf("challenge %q", got)
				}
				var body struct{ Status int }
				if json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Status != 403 {
					t.Fatalf("body %s", w.Body)
				}
			}
		})
	}
	// An API key has no claims: a route requiring them refuses it.
	if w := do(h, "/s", http.Header{"X-Api-Key": {"acme-key"}}); w.Code != 403 {
		t.Fatalf("API key on a claims route: %d", w.Code)
	}
	if counter(fails, "partners", string(ReasonMissingClaim)) != 1 {
		t.Fatal("missing_claim not counted against the authenticator that succeeded")
	}
}

// TestForwardedHeadersNotSpoofable: a client's own X-User-Id never reaches
// an upstream, on authenticated routes and on open ones alike; nor does
// X_User_Id or x_user-email, which a CGI-style upstream reads as the same
// variable (the edge lets such names through under
// server.allow_underscore_headers).
func TestForwardedHeadersNotSpoofable(t *testing.T) {
	sg := signerFor(t, "EdDSA", 0)
	src := "      public_key_files: [" + pemFile(t, sg.pub) + "]\n      forward_claims: {sub: X-User-Id, email: x-user-email, groups: X-Groups, bad: X-Bad}"
	auths := strings.Replace(jwtYAML(src, "EdDSA"), "      forward_claims: {sub: X-User-Id}\n", "", 1)
	f := parse(t, auths,
		`{name: secure, match: {path_prefix: /s}, upstream: up, auth: users}`,
		`{name: open, match: {path_prefix: /o}, upstream: up}`)
	s := testSet(t, f, Options{Now: newClock().Now})
	hs, ups := handler(t, s, f, 0)
	ho, upo := handler(t, s, f, 1)
	spoof := http.Header{"X-User-Id": {"admin"}, "X-User-Email": {"root@x"}, "X-Groups": {"wheel"}, "X-Bad": {"1"}, "X-Other": {"kept"},
		"X_User_Id": {"admin"}, "x_user-email": {"root@x"}, "X_GROUPS": {"wheel"}, "X_Other": {"kept"}}
	underscored := []string{"X_User_Id", "x_user-email", "X_GROUPS"}

	hdr := spoof.Clone()
	hdr.Set("Authorization", "Bearer "+sg.sign(t, claims(map[string]any{"groups": []any{"a", "b"}, "bad": "line\r\nInjected: 1"}), ""))
	if w := do(hs, "/s", hdr); w.Code != 204 {
		t.Fatalf("secure: %d", w.Code)
	}
	want := map[string]string{"X-User-Id": "user-1", "X-User-Email": "", "X-Groups": "a,b", "X-Bad": "", "X-Other": "kept", "Injected": ""}
	for k, v := range want {
		if got := ups.header.Get(k); got != v {
			t.Fatalf("secure route: upstream %s = %q, want %q", k, got, v)
		}
	}
	for _, k := range underscored {
		if v, ok := ups.header[k]; ok {
			t.Fatalf("secure route: client's %s = %q reached the upstream", k, v)
		}
	}
	if w := do(ho, "/o", spoof); w.Code != 204 {
		t.Fatalf("open: %d", w.Code)
	}
	for _, k := range []string{"X-User-Id", "X-User-Email", "X-Groups", "X-Bad"} {
		if v := upo.header.Get(k); v != "" {
			t.Fatalf("open route: client's %s = %q reached the upstream", k, v)
		}
	}
	for _, k := range underscored {
		if v, ok := upo.header[k]; ok {
			t.Fatalf("open route: client's %s = %q reached the upstream", k, v)
		}
	}
	if upo.header.Get("X-Other") != "kept" || !sentAsIs(upo.header, "X_Other") || !sentAsIs(ups.header, "X_Other") || upo.p != nil {
		t.Fatal("open route: unrelated header dropped or a principal invented")
	}
	// Only the underscored copy: the open route must still look.
	if w := do(ho, "/o", http.Header{"X_User_Id": {"admin"}}); w.Code != 204 {
		t.Fatalf("open: %d", w.Code)
	}
	if sentAsIs(upo.header, "X_User_Id") {
		t.Fatal("open route: client's X_User_Id alone reached the upstream")
	}
}

// sentAsIs reports whether h holds name as the client spelled it: these
// tests put names into the request's header map without canonicalising
// them, as a server does for a name with '_'.
func sentAsIs(h http.Header, name string) bool {
	_, ok := h[name]
	return ok
}

func TestMiddlewareConfig(t *testing.T) {
	f := parse(t, apiKeyYAML(t, "", keyLine("a", "k")), `{name: r, match: {path_prefix: /}, upstream: up}`)
	s := testSet(t, f, Options{})
	tests := []struct {
		name  string
		route routes.Route
		err   string
	}{
		{"undefined authenticator", routes.Route{Name: "r", Auth: routes.StringList{"nope"}}, `route "r": authenticator "nope" is not defined`},
		{"listed twice", routes.Route{Name: "r", Auth: routes.StringList{"partners", "partners"}}, `listed twice`},
		{"claims without auth", routes.Route{Name: "r", RequireClaims: map[string]string{"sub": "x"}}, `require_claims needs auth`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Middleware(tt.route); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err %v, want %q", err, tt.err)
			}
		})
	}
	// No auth and nothing forwarded: the very handler it was given.
	mw, err := s.Middleware(routes.Route{Name: "open"})
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{}
	if mw(u) != http.Handler(u) {
		t.Fatal("a route without auth is not a pass-through")
	}
}

// TestNewSetBadConfig: every way an authenticator can fail to build, each
// error naming the authenticator and none echoing a secret.
func TestNewSetBadConfig(t *testing.T) {
	sg := signerFor(t, "RS256", 0)
	goodPEM := pemFile(t, sg.pub)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	smallPEM := writeFile(t, "small.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: smallDER}))
	privDER, _ := x509.MarshalPKCS8PrivateKey(sg.priv)
	privPEM := writeFile(t, "priv.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
	notPEM := writeFile(t, "x.pem", []byte("hello"))
	shortSecret := writeFile(t, "short", []byte("only-16-bytes-xx"))
	emptySecret := writeFile(t, "empty", []byte("\n"))
	t.Setenv("CW_SHORT", "tooshort-but-secret")
	t.Setenv("CW_EMPTY", "")
	missing := filepath.Join(t.TempDir(), "missing")
	key := keyLine("a", "k")
	tests := []struct {
		name string
		yaml string
		err  string
	}{
		{"unset env secret", jwtYAML("      hmac_secret_env: CW_NOT_SET_ANYWHERE", "HS256"), "environment variable CW_NOT_SET_ANYWHERE is unset or empty"},
		{"empty env secret", jwtYAML("      hmac_secret_env: CW_EMPTY", "HS256"), "unset or empty"},
		{"short env secret for HS256", jwtYAML("      hmac_secret_env: CW_SHORT", "HS256"), "HMAC secret has 19 bytes; HS256 needs at least 32"},
		{"secret file too short for HS512", jwtYAML("      hmac_secret_file: "+shortSecret, "HS512"), "HS512 needs at least 64"},
		{"empty secret file", jwtYAML("      hmac_secret_file: "+emptySecret, "HS256"), "is empty"},
		{"missing secret file", jwtYAML("      hmac_secret_file: "+missing, "HS256"), "no such file"},
		{"missing key file", jwtYAML("      public_key_files: ["+missing+"]", "RS256"), "public_key_files[0]"},
		{"not PEM", jwtYAML("      public_key_files: ["+notPEM+"]", "RS256"), "no PEM public key"},
		{"private key", jwtYAML("      public_key_files: ["+privPEM+"]", "RS256"), "holds a private key"},
		{"short RSA key", jwtYAML("      public_key_files: ["+smallPEM+"]", "RS256"), "1024 bits"},
		{"no key for an allowed alg", jwtYAML("      public_key_files: ["+goodPEM+"]", "RS256", "ES256"), "ES256 is allowed but no key"},
		{"missing keys file", "  partners:\n    api_key:\n      keys_file: " + missing, "keys_file"},
		{"keys file without keys", apiKeyYAML(t, ""), "no keys"},
		{"keys file line without colon", apiKeyYAML(t, "", "just-a-key"), "keys.txt:3: want name:sha256hex"},
		{"keys file with a plain key", apiKeyYAML(t, "", "a:my-plain-key"), `keys.txt:3: key "a": want 64 hex digits`},
		{"keys file duplicate name", apiKeyYAML(t, "", key, keyLine("a", "other")), `key name "a" already used on line 3`},
		{"keys file duplicate key", apiKeyYAML(t, "", key, strings.Replace(key, "a:", "b:", 1)), "same hash as line 3"},
		{"keys file name with a space", apiKeyYAML(t, "", strings.Replace(key, "a:", "a b:", 1)), "without spaces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := parse(t, tt.yaml)
			_, err := NewSet(context.Background(), f, nil, Options{Logger: quiet})
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err %v, want %q", err, tt.err)
			}
			// Located in the routes file: at the authenticator, or at
			// keys_file for what is wrong with the keys file.
			if !regexp.MustCompile(`^test\.yaml:\d+:\d+: authenticators\.(users|partners\.api_key\.keys_file): `).MatchString(err.Error()) {
				t.Fatalf("error is not located at the authenticator: %v", err)
			}
			for _, secret := range []string{"tooshort-but-secret", "only-16-bytes-xx", "my-plain-key"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error shows a secret: %v", err)
				}
			}
		})
	}

	// Configurations routes would refuse, built by hand: NewSet refuses
	// them too rather than trusting its caller.
	hand := []struct {
		name string
		a    routes.Authenticator
		err  string
	}{
		{"neither", routes.Authenticator{}, "needs one of jwt, api_key, basic, ext_authz or oidc"},
		{"both", routes.Authenticator{JWT: &routes.JWT{}, APIKey: &routes.APIKey{}}, "exclusive"},
		{"no algorithms", routes.Authenticator{JWT: &routes.JWT{PublicKeyFiles: []string{goodPEM}}}, "no algorithms"},
		{"none", routes.Authenticator{JWT: &routes.JWT{PublicKeyFiles: []string{goodPEM}, Algorithms: []string{"none"}}}, `"none" is not supported`},
		{"mixed HMAC and RSA", routes.Authenticator{JWT: &routes.JWT{PublicKeyFiles: []string{goodPEM}, Algorithms: []string{"HS256", "RS256"}}}, "cannot share"},
		{"secret without HS alg", routes.Authenticator{JWT: &routes.JWT{HMACSecretEnv: "X", PublicKeyFiles: []string{goodPEM}, Algorithms: []string{"RS256"}}}, "no HS algorithm"},
		{"no key source", routes.Authenticator{JWT: &routes.JWT{Algorithms: []string{"RS256"}}}, "needs jwks_url or public_key_files"},
		{"HS without secret", routes.Authenticator{JWT: &routes.JWT{Algorithms: []string{"HS256"}}}, "needs hmac_secret_env"},
		{"api key without file", routes.Authenticator{APIKey: &routes.APIKey{Header: "X-K"}}, "keys_file is required"},
	}
	for _, tt := range hand {
		t.Run("by hand/"+tt.name, func(t *testing.T) {
			f := &routes.File{Authenticators: map[string]routes.Authenticator{"h": tt.a}}
			_, err := NewSet(context.Background(), f, nil, Options{Logger: quiet})
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), `<input>:1:1: authenticators.h: `) {
				t.Fatalf("err %v, want %q", err, tt.err)
			}
		})
	}
	if _, err := NewSet(context.Background(), nil, nil, Options{}); err == nil {
		t.Fatal("nil file accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewSet(ctx, &routes.File{}, nil, Options{}); err == nil {
		t.Fatal("a done context accepted")
	}
}

// TestNewSetFailureReleasesJWKS: when a later authenticator fails, the
// refreshers already started for earlier ones are stopped (goleak checks).
func TestNewSetFailureReleasesJWKS(t *testing.T) {
	sg := signerFor(t, "RS256", 0)
	p := newIDP(t, jwkOf(sg.pub, "k"))
	yaml := strings.Replace(jwtYAML("      jwks_url: "+p.URL, "RS256"), "users:", "a-users:", 1) + "\n" +
		"  z-keys:\n    api_key:\n      keys_file: " + filepath.Join(t.TempDir(), "missing")
	f := parse(t, yaml)
	if _, err := NewSet(context.Background(), f, nil, Options{Logger: quiet}); err == nil || !strings.Contains(err.Error(), `test.yaml:15:18: authenticators.z-keys.api_key.keys_file: reading the keys file: `) {
		t.Fatalf("err %v", err)
	}
}

func TestPrincipalClaim(t *testing.T) {
	p := &Principal{Claims: map[string]any{
		"sub": "u1", "n": float64(1234567), "f": 1.5, "big": 1e300, "b": true, "arr": []any{"a", float64(2)},
		"obj": map[string]any{"k": "v", "deep": map[string]any{"x": "y"}}, "null": nil, "a.b": "dotted",
		"badarr": []any{map[string]any{"k": 1}},
	}}
	tests := []struct {
		name, want string
		ok         bool
	}{
		{"sub", "u1", true}, {"n", "1234567", true}, {"f", "1.5", true}, {"big", "1e+300", true}, {"b", "true", true},
		{"arr", "a,2", true}, {"obj", `{"deep":{"x":"y"},"k":"v"}`, true}, {"obj.k", "v", true}, {"obj.deep.x", "y", true},
		{"obj.nope", "", false}, {"sub.x", "", false}, {"null", "", false}, {"missing", "", false}, {"a.b", "dotted", true},
		{"badarr", `{"k":1}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := p.Claim(tt.name)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Claim(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
			}
		})
	}
	var nilP *Principal
	if _, ok := nilP.Claim("sub"); ok {
		t.Fatal("nil principal has a claim")
	}
	key := &Principal{Subject: "acme", KeyName: "acme"}
	if v, ok := key.Claim("sub"); !ok || v != "acme" {
		t.Fatalf("API key sub: %q %v", v, ok)
	}
	if _, ok := key.Claim("scope"); ok {
		t.Fatal("API key has claims")
	}
	ctx := NewContext(context.Background(), p)
	if FromContext(ctx) != p || FromContext(context.Background()) != nil {
		t.Fatal("context round trip")
	}
}

// TestSecretsNeverLogged: the HMAC secret, tokens and API keys appear in no
// log line, across successes, every kind of failure and a reload.
func TestSecretsNeverLogged(t *testing.T) {
	sg := signerFor(t, "HS384", 0)
	secret := string(sg.priv.([]byte))
	t.Setenv("CW_LOG_SECRET", secret)
	auths := jwtYAML("      hmac_secret_env: CW_LOG_SECRET", "HS384") + "\n" + apiKeyYAML(t, "", keyLine("acme", "acme-api-key-value")) +
		"\n" + basicYAML(t, "", htpasswdLine(t, "alice", "basic-password-value"))
	f := parse(t, auths, `{name: r, match: {path_prefix: /}, upstream: up, auth: [users, partners, staff], require_claims: {scope: x}}`)
	log, logs := logBuffer()
	s, err := NewSet(context.Background(), f, nil, Options{Logger: log, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, _ := handler(t, s, f, 0)
	good := sg.sign(t, claims(nil), "")
	for _, hdr := range []http.Header{
		bearer(good), bearer(good + "x"), bearer(signerFor(t, "HS384", 1).sign(t, claims(nil), "")),
		{"X-Api-Key": {"acme-api-key-value"}}, {"X-Api-Key": {"wrong-api-key-value"}},
		basicHeader("alice", "basic-password-value"), basicHeader("alice", "wrong-basic-password"),
	} {
		do(h, "/", hdr)
	}
	out := logs.String()
	for _, s := range []string{secret, good, strings.Split(good, ".")[2], "acme-api-key-value", "wrong-api-key-value", "basic-password-value", "wrong-basic-password",
		basicHeader("alice", "basic-password-value").Get("Authorization")[6:]} {
		if strings.Contains(out, s) {
			t.Fatalf("log contains a secret:\n%s", out)
		}
	}
	if !strings.Contains(out, "reason=") {
		t.Fatalf("nothing logged:\n%s", out)
	}
}

// TestNumericClaimsKeepDigits: a 64-bit id survives to the forwarded header
// and to Claim, which float64 would round (2^53+1 -> 2^53).
func TestNumericClaimsKeepDigits(t *testing.T) {
	sg := signerFor(t, "ES256", 0)
	src := "      public_key_files: [" + pemFile(t, sg.pub) + "]\n      forward_claims: {uid: X-Uid}"
	auths := strings.Replace(jwtYAML(src, "ES256"), "      forward_claims: {sub: X-User-Id}\n", "", 1)
	f := parse(t, auths, `{name: r, match: {path_prefix: /}, upstream: up, auth: users, require_claims: {uid: "9007199254740993"}}`)
	s := testSet(t, f, Options{Now: newClock().Now})
	h, up := handler(t, s, f, 0)
	tok := sg.sign(t, claims(map[string]any{"uid": json.RawMessage("9007199254740993")}), "")
	if w := do(h, "/", bearer(tok)); w.Code != 204 {
		t.Fatalf("status %d", w.Code)
	}
	if got := up.header.Get("X-Uid"); got != "9007199254740993" {
		t.Fatalf("X-Uid %q", got)
	}
	if v, _ := up.p.Claim("uid"); v != "9007199254740993" {
		t.Fatalf("Claim(uid) %q", v)
	}
}

// TestDefaultClientNoDowngrade: the client NewSet builds for JWKS and OIDC
// providers follows redirects, but never from https to plain http: a 302
// would take keys or a discovery document from a clear-text answer, a 307
// would send a token request's client secret again in clear. The plain
// server must see nothing.
func TestDefaultClientNoDowngrade(t *testing.T) {
	var plainHits atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		_, _ = io.WriteString(w, "from plain http")
	}))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-plain":
			http.Redirect(w, r, plain.URL+"/x", http.StatusFound)
		case "/to-plain-307":
			http.Redirect(w, r, plain.URL+"/token", http.StatusTemporaryRedirect)
		case "/to-tls":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			_, _ = io.WriteString(w, "from https")
		}
	}))
	defer tlsSrv.Close()
	c := defaultHTTPClient()
	c.Transport.(*http.Transport).TLSClientConfig = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig
	defer c.CloseIdleConnections()
	tests := []struct {
		name, method, url string
		want              string // the body read, "" for a refused redirect
	}{
		{"https to http", http.MethodGet, tlsSrv.URL + "/to-plain", ""},
		{"https to http, 307 with a secret", http.MethodPost, tlsSrv.URL + "/to-plain-307", ""},
		{"https to https", http.MethodGet, tlsSrv.URL + "/to-tls", "from https"},
		{"http (allowed by the routes file) stays followed", http.MethodGet, plain.URL + "/x", "from plain http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := plainHits.Load()
			req, _ := http.NewRequest(tt.method, tt.url, strings.NewReader("client_secret=s3cret&code=c"))
			res, err := c.Do(req)
			got := ""
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				got = string(b)
			}
			if got != tt.want {
				t.Fatalf("read %q (err %v), want %q", got, err, tt.want)
			}
			if tt.want == "" && plainHits.Load() != before {
				t.Fatal("the plain http server was reached")
			}
		})
	}
}
