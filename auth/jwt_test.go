package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwtYAML is an authenticator "users" with the given key-source lines.
func jwtYAML(source string, algs ...string) string {
	return fmt.Sprintf(`  users:
    jwt:
      issuer: https://id.test/
      audiences: [api, other]
      algorithms: [%s]
      leeway: 30s
      forward_claims: {sub: X-User-Id}
%s`, strings.Join(algs, ", "), source)
}

const usersRoute = `{name: r, match: {path_prefix: /}, upstream: up, auth: users}`

func TestJWTEveryAlgorithm(t *testing.T) {
	algs := []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
	for _, alg := range algs {
		for _, via := range []string{"file", "jwks"} {
			if strings.HasPrefix(alg, "HS") && via == "jwks" {
				via = "env" // HMAC secrets never come from a JWKS
			}
			t.Run(alg+"/"+via, func(t *testing.T) {
				sg := signerFor(t, alg, 0)
				var src string
				switch {
				case via == "env":
					t.Setenv("CW_TEST_SECRET", string(sg.priv.([]byte)))
					src = "      hmac_secret_env: CW_TEST_SECRET"
				case strings.HasPrefix(alg, "HS"):
					src = "      hmac_secret_file: " + writeFile(t, "secret", append(sg.priv.([]byte), '\n'))
				case via == "file":
					src = "      public_key_files: [" + pemFile(t, sg.pub) + "]"
				default:
					p := newIDP(t, jwkOf(sg.pub, "k1"))
					src = "      jwks_url: " + p.URL
				}
				clk := newClock()
				f := parse(t, jwtYAML(src, alg), usersRoute)
				s := testSet(t, f, Options{Now: clk.Now})
				h, up := handler(t, s, f, 0)
				tok := sg.sign(t, claims(nil), "k1")
				w := do(h, "/x", bearer(tok))
				if w.Code != http.StatusNoContent {
					t.Fatalf("status %d, body %s, challenge %q", w.Code, w.Body, w.Header().Get("WWW-Authenticate"))
				}
				if up.p == nil || up.p.Subject != "user-1" || up.p.Authenticator != "users" || up.p.KeyName != "" {
					t.Fatalf("principal %+v", up.p)
				}
				if got := up.header.Get("X-User-Id"); got != "user-1" {
					t.Fatalf("X-User-Id %q", got)
				}
				if up.header.Get("Authorization") != "" {
					t.Fatal("the token reached the upstream")
				}
			})
		}
	}
}

// TestJWTRefusals is every way a token is refused, with the status, the
// RFC 6750 challenge, the body and the metric each one must produce.
func TestJWTRefusals(t *testing.T) {
	rs := signerFor(t, "RS256", 0)
	other := signerFor(t, "RS256", 1)
	es := signerFor(t, "ES256", 0)
	p := newIDP(t, jwkOf(rs.pub, "k1"), jwkOf(es.pub, "e1"))
	src := "      jwks_url: " + p.URL + "\n      jwks_refresh: {min: 1m}"
	f := parse(t, jwtYAML(src, "RS256", "ES256"), usersRoute)
	clk := newClock()
	fails := failuresVec()
	log, logs := logBuffer()
	s := testSet(t, f, Options{Now: clk.Now, Failures: fails, Logger: log})
	started(t, s)
	h, up := handler(t, s, f, 0)

	good := rs.sign(t, claims(nil), "k1")
	parts := strings.Split(good, ".")
	pubDER, _ := x509.MarshalPKIXPublicKey(rs.pub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	confused := signer{alg: "HS256", method: jwt.SigningMethodHS256, priv: pubPEM}.sign(t, claims(nil), "k1")
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	critTok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(nil))
	critTok.Header["kid"], critTok.Header["crit"], critTok.Header["exp-ext"] = "k1", []string{"exp-ext"}, 1
	critical, err := critTok.SignedString(rs.priv)
	if err != nil {
		t.Fatal(err)
	}
	tampered := parts[0] + "." + b64(claims(map[string]any{"sub": "admin"})) + "." + parts[2]
	// The last base64 character of a 256-byte signature carries 4 unused
	// bits: setting them gives a second spelling of the same signature.
	sig := []byte(parts[2])
	sig[len(sig)-1] = map[byte]byte{'A': 'B', 'Q': 'R', 'g': 'h', 'w': 'x'}[sig[len(sig)-1]]
	nonCanonical := parts[0] + "." + parts[1] + "." + string(sig)

	tests := []struct {
		name   string
		header http.Header
		reason Reason
	}{
		{"no header", nil, ReasonMissing},
		{"basic scheme", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, ReasonMissing},
		{"bearer without token", http.Header{"Authorization": {"Bearer "}}, ReasonMalformed},
		{"two authorization headers", http.Header{"Authorization": {"Bearer " + good, "Bearer " + good}}, ReasonMalformed},
		{"not a jwt", bearer("not-a-token"), ReasonMalformed},
		{"two segments", bearer(parts[0] + "." + parts[1]), ReasonMalformed},
		{"four segments", bearer(good + ".x"), ReasonMalformed},
		{"bad base64 header", bearer("!!!." + parts[1] + "." + parts[2]), ReasonMalformed},
		{"header not json", bearer(base64.RawURLEncoding.EncodeToString([]byte("{")) + "." + parts[1] + "." + parts[2]), ReasonMalformed},
		{"non-canonical base64", bearer(nonCanonical), ReasonMalformed},
		{"oversized", bearer(strings.Repeat("a", 8<<10+1)), ReasonOversized},
		{"expired", bearer(rs.sign(t, claims(map[string]any{"exp": t0.Add(-31 * time.Second).Unix()}), "k1")), ReasonExpired},
		{"not yet valid", bearer(rs.sign(t, claims(map[string]any{"nbf": t0.Add(31 * time.Second).Unix()}), "k1")), ReasonNotYetValid},
		{"issued in the future", bearer(rs.sign(t, claims(map[string]any{"iat": t0.Add(31 * time.Second).Unix(), "nbf": nil}), "k1")), ReasonNotYetValid},
		{"no exp", bearer(rs.sign(t, claims(map[string]any{"exp": nil}), "k1")), ReasonClaims},
		{"exp of the wrong type", bearer(rs.sign(t, claims(map[string]any{"exp": "tomorrow"}), "k1")), ReasonClaims},
		{"wrong issuer", bearer(rs.sign(t, claims(map[string]any{"iss": "https://evil.test/"}), "k1")), ReasonIssuer},
		{"no issuer", bearer(rs.sign(t, claims(map[string]any{"iss": nil}), "k1")), ReasonIssuer},
		{"wrong audience", bearer(rs.sign(t, claims(map[string]any{"aud": []string{"web", "mobile"}}), "k1")), ReasonAudience},
		{"no audience", bearer(rs.sign(t, claims(map[string]any{"aud": nil}), "k1")), ReasonAudience},
		{"signed by another key", bearer(other.sign(t, claims(nil), "k1")), ReasonSignature},
		{"tampered payload", bearer(tampered), ReasonSignature},
		{"alg none", bearer(none), ReasonAlgorithm},
		{"alg none with kid", bearer(strings.Replace(none, strings.Split(none, ".")[0], b64(map[string]any{"alg": "none", "kid": "k1"}), 1)), ReasonAlgorithm},
		{"confusion: HS256 keyed with the RSA public key", bearer(confused), ReasonAlgorithm},
		{"algorithm not listed", bearer(signerFor(t, "RS384", 0).sign(t, claims(nil), "k1")), ReasonAlgorithm},
		{"unknown alg", bearer(b64(map[string]any{"alg": "XS999"}) + "." + parts[1] + "." + parts[2]), ReasonAlgorithm},
		{"crit header", bearer(critical), ReasonMalformed},
		{"unknown kid", bearer(rs.sign(t, claims(nil), "nope")), ReasonUnknownKID},
		{"kid of a key of another type", bearer(rs.sign(t, claims(nil), "e1")), ReasonUnknownKID},
		{"ES256 signed by another P-256 key", bearer(signerFor(t, "ES256", 1).sign(t, claims(nil), "e1")), ReasonSignature},
	}
	// Within the leeway, the time claims still pass.
	if w := do(h, "/", bearer(rs.sign(t, claims(map[string]any{"exp": t0.Add(-29 * time.Second).Unix()}), "k1"))); w.Code != http.StatusNoContent {
		t.Fatalf("expired within leeway: status %d", w.Code)
	}
	if w := do(h, "/", bearer(good)); w.Code != http.StatusNoContent {
		t.Fatalf("good token: status %d %s", w.Code, w.Body)
	}
	calls := up.calls
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counter(fails, "users", string(tt.reason))
			w := do(h, "/", tt.header)
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", w.Code)
			}
			ch := w.Header().Get("WWW-Authenticate")
			wantCh := `Bearer realm="users"`
			if tt.reason != ReasonMissing {
				wantCh += `, error="invalid_token", error_description="` + tt.reason.description() + `"`
			}
			if ch != wantCh {
				t.Fatalf("challenge %q, want %q", ch, wantCh)
			}
			var body struct {
				Error  string `json:"error"`
				Status int    `json:"status"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Status != 401 || body.Error != tt.reason.description() {
				t.Fatalf("body %s (%v)", w.Body, err)
			}
			if got := counter(fails, "users", string(tt.reason)); got != before+1 {
				t.Fatalf("failures{reason=%q} went from %v to %v", tt.reason, before, got)
			}
		})
	}
	if up.calls != calls {
		t.Fatalf("%d refused requests reached the upstream", up.calls-calls)
	}
	out := logs.String()
	if strings.Contains(out, parts[2]) || strings.Contains(out, parts[1]) {
		t.Fatal("a token reached the log")
	}
	if !strings.Contains(out, "reason=bad_signature") {
		t.Fatalf("refusals are not logged at debug level:\n%s", out)
	}
}

func TestJWTTokenSources(t *testing.T) {
	sg := signerFor(t, "ES256", 0)
	key := pemFile(t, sg.pub)
	tok := sg.sign(t, claims(nil), "")
	tests := []struct {
		name      string
		from      string
		keep      bool
		target    string
		header    http.Header
		status    int
		wantQuery string
		wantHdr   map[string]string // what the upstream sees ("" = absent)
	}{
		{"bearer stripped", "", false, "/", bearer(tok), 204, "", map[string]string{"Authorization": ""}},
		{"bearer kept", "", true, "/", bearer(tok), 204, "", map[string]string{"Authorization": "Bearer " + tok}},
		{"lowercase scheme", "", false, "/", http.Header{"Authorization": {"bearer " + tok}}, 204, "", nil},
		{"named header", "{header: X-Token}", false, "/", http.Header{"X-Token": {tok}, "Authorization": {"Basic x"}}, 204, "", map[string]string{"X-Token": "", "Authorization": "Basic x"}},
		{"named header with scheme", "{header: X-Token}", false, "/", http.Header{"X-Token": {"Bearer " + tok}}, 204, "", nil},
		{"named header ignores authorization", "{header: X-Token}", false, "/", bearer(tok), 401, "", nil},
		{"cookie", "{cookie: session}", false, "/", http.Header{"Cookie": {"a=1; session=" + tok + "; b=2"}}, 204, "", map[string]string{"Cookie": "a=1; b=2"}},
		{"cookie only one", "{cookie: session}", false, "/", http.Header{"Cookie": {"session=" + tok}}, 204, "", map[string]string{"Cookie": ""}},
		{"cookie kept", "{cookie: session}", true, "/", http.Header{"Cookie": {"session=" + tok}}, 204, "", map[string]string{"Cookie": "session=" + tok}},
		{"two cookies", "{cookie: session}", false, "/", http.Header{"Cookie": {"session=" + tok + "; session=" + tok}}, 401, "", nil},
		// Go reads a cookie's name with the blanks around it trimmed: the
		// strip must remove what was read, not send it on as " session".
		{"cookie name with a blank", "{cookie: session}", false, "/", http.Header{"Cookie": {"a=1; session =" + tok}}, 204, "", map[string]string{"Cookie": "a=1"}},
		{"cookie name with a tab", "{cookie: session}", false, "/", http.Header{"Cookie": {"session\t=" + tok + "; b=2"}}, 204, "", map[string]string{"Cookie": "b=2"}},
		{"cookie spelled twice, once with a blank", "{cookie: session}", false, "/", http.Header{"Cookie": {"session=" + tok + "; session =" + tok}}, 401, "", nil},
		// Names a PHP or ASP.NET upstream reads as the token's cookie: the
		// edge would verify one token while the upstream reads the other.
		{"cookie in another case beside", "{cookie: session}", false, "/", http.Header{"Cookie": {"session=" + tok + "; Session=forged"}}, 401, "", nil},
		{"cookie with an encoded name beside", "{cookie: session}", false, "/", http.Header{"Cookie": {"session=" + tok + "; %73ession=forged"}}, 401, "", nil},
		{"cookies of other names kept", "{cookie: session}", false, "/", http.Header{"Cookie": {"sessions=1; session=" + tok + "; xsession=2"}}, 204, "", map[string]string{"Cookie": "sessions=1; xsession=2"}},
		{"cookie as an array in a second line", "{cookie: session}", false, "/", http.Header{"Cookie": {"session=" + tok, "session[a]=forged"}}, 401, "", nil},
		{"cookie twin alone", "{cookie: SESSION}", false, "/", http.Header{"Cookie": {"session=" + tok}}, 401, "", nil},
		{"query in another case beside", "{query: access_token}", false, "/p?access_token=" + tok + "&Access_Token=forged", nil, 401, "", nil},
		{"query after ';' beside", "{query: access_token}", false, "/p?x=1;access_token=forged&access_token=" + tok, nil, 401, "", nil},
		{"query with '.' for '_' beside", "{query: access_token}", false, "/p?access.token=forged&access_token=" + tok, nil, 401, "", nil},
		{"query", "{query: access_token}", false, "/p?z=1&access_token=" + tok + "&a=%20b", nil, 204, "z=1&a=%20b", nil},
		{"query kept", "{query: access_token}", true, "/p?access_token=" + tok, nil, 204, "access_token=" + tok, nil},
		{"query twice", "{query: access_token}", false, "/p?access_token=" + tok + "&access_token=" + tok, nil, 401, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "      public_key_files: [" + key + "]"
			if tt.from != "" {
				src += "\n      from: " + tt.from
			}
			if tt.keep {
				src += "\n      keep_token: true"
			}
			f := parse(t, jwtYAML(src, "ES256"), usersRoute)
			clk := newClock()
			s := testSet(t, f, Options{Now: clk.Now})
			h, up := handler(t, s, f, 0)
			r := httptestRequest(tt.target, tt.header)
			orig := r.Header.Clone()
			w := recorder(h, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.status, w.Body)
			}
			if tt.status != 204 {
				return
			}
			for k, want := range tt.wantHdr {
				if got := up.header.Get(k); got != want {
					t.Fatalf("upstream %s: %q, want %q", k, got, want)
				}
			}
			if strings.Contains(tt.target, "?") && up.query != tt.wantQuery {
				t.Fatalf("upstream query %q, want %q", up.query, tt.wantQuery)
			}
			if !tt.keep && strings.Contains(up.requestURI, tok) {
				t.Fatalf("the token is still in RequestURI %q", up.requestURI)
			}
			// The middleware works on a copy: the caller's request is as sent.
			for k := range orig {
				if r.Header.Get(k) != orig.Get(k) {
					t.Fatalf("the inbound request's %s was modified", k)
				}
			}
			if strings.Contains(tt.target, "?") && r.URL.RawQuery != strings.SplitN(tt.target, "?", 2)[1] {
				t.Fatalf("the inbound request's query was modified: %q", r.URL.RawQuery)
			}
		})
	}
}

func TestJWTCache(t *testing.T) {
	sg := signerFor(t, "RS256", 0)
	p := newIDP(t, jwkOf(sg.pub, "k1"))
	f := parse(t, jwtYAML("      jwks_url: "+p.URL+"\n      token_cache: 2", "RS256"), usersRoute)
	clk := newClock()
	s := testSet(t, f, Options{Now: clk.Now})
	a := s.auths["users"].(*jwtAuth)
	ctx := t.Context()
	tok := sg.sign(t, claims(map[string]any{"exp": t0.Add(time.Minute).Unix()}), "k1")
	p1, r := a.verify(ctx, tok)
	if r != ReasonNone {
		t.Fatalf("verify: %s", r)
	}
	p2, _ := a.verify(ctx, tok)
	if p1 != p2 {
		t.Fatal("the second verification was not served from the cache")
	}
	// Bounded by exp + leeway: a cached token expires like any other.
	clk.Add(time.Minute + 31*time.Second)
	if _, r := a.verify(ctx, tok); r != ReasonExpired {
		t.Fatalf("cached token after exp: %q, want expired", r)
	}
	// Bounded in size.
	for i := range 5 {
		a.verify(ctx, sg.sign(t, claims(map[string]any{"jti": i, "exp": t0.Add(time.Hour).Unix()}), "k1"))
	}
	if n := a.cache.len(); n > 2 {
		t.Fatalf("cache holds %d entries, bound is 2", n)
	}
	// Off when token_cache is 0.
	f0 := parse(t, jwtYAML("      public_key_files: ["+pemFile(t, sg.pub)+"]\n      token_cache: 0", "RS256"), usersRoute)
	s0 := testSet(t, f0, Options{Now: clk.Now})
	if s0.auths["users"].(*jwtAuth).cache != nil {
		t.Fatal("token_cache: 0 still caches")
	}
}

func httptestRequest(target string, hdr http.Header) *http.Request {
	// A server-side request, RequestURI included, as the edge receives it.
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for k, vs := range hdr {
		r.Header[k] = vs
	}
	return r
}

// TestPEMKeyFormats: public_key_files takes PKIX and PKCS#1 public keys and
// certificates, several to a file, and skips unrelated blocks.
func TestPEMKeyFormats(t *testing.T) {
	rs, es := signerFor(t, "RS256", 0), signerFor(t, "ES256", 0)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, es.pub, es.priv)
	if err != nil {
		t.Fatal(err)
	}
	var file []byte
	file = append(file, pem.EncodeToMemory(&pem.Block{Type: "COMMENT", Bytes: []byte("skipped")})...)
	file = append(file, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(rs.pub.(*rsa.PublicKey))})...)
	file = append(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})...)
	path := writeFile(t, "keys.pem", file)
	f := parse(t, jwtYAML("      public_key_files: ["+path+"]", "RS256", "ES256"), usersRoute)
	s := testSet(t, f, Options{Now: newClock().Now})
	a := s.auths["users"].(*jwtAuth)
	for _, sg := range []signer{rs, es} {
		if _, r := a.verify(t.Context(), sg.sign(t, claims(nil), "")); r != ReasonNone {
			t.Fatalf("%s: %s", sg.alg, r)
		}
	}
	bad := writeFile(t, "bad.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("garbage")}))
	f2 := parse(t, jwtYAML("      public_key_files: ["+bad+"]", "RS256"), usersRoute)
	if _, err := NewSet(t.Context(), f2, nil, Options{Logger: quiet}); err == nil || !strings.Contains(err.Error(), "PUBLIC KEY block 1") {
		t.Fatalf("garbage key: %v", err)
	}
}

func TestTokenCacheEviction(t *testing.T) {
	c := newTokenCache(4)
	p := &Principal{}
	for i := range 3 {
		c.put(fmt.Sprint("valid", i), cacheEntry{p: p, until: t0.Add(time.Hour)}, t0)
	}
	c.put("expires", cacheEntry{p: p, until: t0.Add(time.Second)}, t0)
	// Full: the next put drops the expired entry rather than a valid one.
	c.put("new", cacheEntry{p: p, until: t0.Add(time.Hour)}, t0.Add(time.Minute))
	if c.len() != 4 {
		t.Fatalf("%d entries", c.len())
	}
	if _, ok := c.m["expires"]; ok {
		t.Fatal("kept the expired entry")
	}
	// Re-storing a token that is there evicts nothing.
	c.put("new", cacheEntry{p: p, until: t0.Add(time.Hour)}, t0.Add(time.Minute))
	if c.len() != 4 {
		t.Fatalf("%d entries after a re-put", c.len())
	}
	if got, ok := c.get("valid0", t0, 1); ok || got != nil {
		t.Fatal("an entry of another key version was served")
	}
	if newTokenCache(0) != nil {
		t.Fatal("a zero-size cache exists")
	}
	var off *tokenCache
	off.put("x", cacheEntry{}, t0)
	if _, ok := off.get("x", t0, 0); ok || off.len() != 0 {
		t.Fatal("a nil cache stored something")
	}
}

// TestConcurrentVerifyAndRotate runs verifications in parallel with JWKS
// refreshes that swap keys in and out, for the race detector; every answer
// must be a success or unknown_kid/bad_signature, never a wrong principal.
func TestConcurrentVerifyAndRotate(t *testing.T) {
	k1, k2 := signerFor(t, "RS256", 0), signerFor(t, "ES256", 0)
	p := newIDP(t, jwkOf(k1.pub, "k1"), jwkOf(k2.pub, "k2"))
	f := parse(t, jwtYAML("      jwks_url: "+p.URL+"\n      jwks_refresh: {min: 1s}", "RS256", "ES256"), usersRoute)
	s := testSet(t, f, Options{Now: newClock().Now})
	started(t, s)
	a := s.auths["users"].(*jwtAuth)
	toks := map[string]string{
		"u1": k1.sign(t, claims(map[string]any{"sub": "u1"}), "k1"),
		"u2": k2.sign(t, claims(map[string]any{"sub": "u2"}), "k2"),
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				sub := []string{"u1", "u2"}[(g+i)%2]
				pr, r := a.verify(context.Background(), toks[sub])
				switch {
				case pr != nil && pr.Subject != sub:
					t.Errorf("token of %s verified as %s", sub, pr.Subject)
					return
				case pr == nil && r != ReasonUnknownKID && r != ReasonSignature:
					t.Errorf("reason %q", r)
					return
				}
			}
		}()
	}
	for i := range 20 {
		if i%2 == 0 {
			p.set(http.StatusOK, jwkOf(k1.pub, "k1"))
		} else {
			p.set(http.StatusOK, jwkOf(k1.pub, "k1"), jwkOf(k2.pub, "k2"))
		}
		a.jwks.refreshShared(context.Background())
	}
	close(done)
	wg.Wait()
}

// TestRemovedKeyUnderLoad: tokens of a key are verified (and cached) by
// many requests at once while the provider drops the key. Once the refresh
// that saw the new set has returned, not one of the next 1,600 requests
// with such a token is accepted, from the cache or otherwise, and the
// remaining key's tokens keep verifying.
func TestRemovedKeyUnderLoad(t *testing.T) {
	k1, k2 := signerFor(t, "RS256", 0), signerFor(t, "RS256", 1)
	p := newIDP(t, jwkOf(k1.pub, "k1"), jwkOf(k2.pub, "k2"))
	f := parse(t, jwtYAML("      jwks_url: "+p.URL+"\n      jwks_refresh: {min: 1m}", "RS256"), usersRoute)
	s := testSet(t, f, Options{Now: newClock().Now})
	started(t, s)
	a := s.auths["users"].(*jwtAuth)
	gone, kept := k1.sign(t, claims(map[string]any{"sub": "gone"}), "k1"), k2.sign(t, claims(map[string]any{"sub": "kept"}), "k2")
	var removed atomic.Bool
	var wg sync.WaitGroup
	const workers, after = 8, 200
	for range workers {
		wg.Go(func() {
			for n := 0; n < after; {
				done := removed.Load()
				pr, _ := a.verify(context.Background(), gone)
				if done {
					if pr != nil {
						t.Errorf("a token of the removed key was accepted after the refresh")
						return
					}
					n++
				}
				if pr, r := a.verify(context.Background(), kept); pr == nil || pr.Subject != "kept" {
					t.Errorf("the remaining key's token: %v %q", pr, r)
					return
				}
			}
		})
	}
	for a.cache.len() < 2 { // both tokens verified and cached
		runtime.Gosched()
	}
	p.set(http.StatusOK, jwkOf(k2.pub, "k2"))
	if a.jwks.refreshShared(context.Background()) == 0 {
		t.Fatal("refresh failed")
	}
	removed.Store(true)
	wg.Wait()
}
