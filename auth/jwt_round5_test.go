package auth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// signRaw signs a header and a payload given as JSON text, so that a test
// can send what an encoder would never write: duplicate members, numbers
// as spelled.
func signRaw(t *testing.T, s signer, header, payload string) string {
	t.Helper()
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	sig, err := s.method.Sign(in, s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestJWTHostileTokensRoundFive sends tokens an attacker (or a careless
// issuer) can produce through a JWKS-backed authenticator and checks what
// the upstream received: a refused token never reaches it, and every
// refusal is the JSON 401 with its bounded reason.
func TestJWTHostileTokensRoundFive(t *testing.T) {
	rs := signerFor(t, "RS256", 0)
	evil := signerFor(t, "RS256", 1)
	es := signerFor(t, "ES256", 0)
	p := newIDP(t, jwkOf(rs.pub, "k1"), jwkOf(es.pub, "e1"))
	// A server an attacker names in jku or x5u: the edge must never ask it.
	var asked atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{jwkOf(evil.pub, "k1")}})
	}))
	t.Cleanup(attacker.Close)
	f := parse(t, jwtYAML("      jwks_url: "+p.URL+"\n      jwks_refresh: {min: 1m}", "RS256", "ES256"), usersRoute)
	clk := newClock()
	s := testSet(t, f, Options{Now: clk.Now})
	started(t, s)
	h, up := handler(t, s, f, 0)

	// A valid payload whose time claims are spelled as given.
	payload := func(times string) string {
		return fmt.Sprintf(`{"iss":"https://id.test/","aud":"api","sub":"user-1",%s}`, times)
	}
	iat, nbf, exp := t0.Add(-60e9).Unix(), t0.Add(-60e9).Unix(), t0.Add(3600e9).Unix()
	times := func(iatS, nbfS, expS string) string {
		if iatS == "" {
			iatS = fmt.Sprint(iat)
		}
		if nbfS == "" {
			nbfS = fmt.Sprint(nbf)
		}
		if expS == "" {
			expS = fmt.Sprint(exp)
		}
		return fmt.Sprintf(`"iat":%s,"nbf":%s,"exp":%s`, iatS, nbfS, expS)
	}
	rsHdr := `{"alg":"RS256","typ":"JWT","kid":"k1"}`
	withTimes := func(iatS, nbfS, expS string) string {
		return signRaw(t, rs, rsHdr, payload(times(iatS, nbfS, expS)))
	}
	evilJWK, _ := json.Marshal(jwkOf(evil.pub, "k1"))
	good := rs.sign(t, claims(nil), "k1")
	gp := strings.Split(good, ".")
	std := func(seg string) string {
		b, _ := base64.RawURLEncoding.DecodeString(seg)
		return base64.StdEncoding.EncodeToString(b)
	}

	tests := []struct {
		name   string
		auth   string // the Authorization header
		reason Reason // ReasonNone: accepted
		sub    string // accepted: the subject the upstream must see
	}{
		// Accepted, as RFC 7519 allows.
		{"aud an array with one good value", "Bearer " + rs.sign(t, claims(map[string]any{"aud": []string{"web", "api"}}), "k1"), ReasonNone, "user-1"},
		{"exp a float", "Bearer " + withTimes("", "", fmt.Sprintf("%d.5", exp)), ReasonNone, "user-1"},
		{"duplicate sub: the lexically last one (RFC 7519 4)", "Bearer " + signRaw(t, rs, rsHdr, `{"sub":"admin","iss":"https://id.test/","aud":"api","sub":"user-1",`+times("", "", "")+`}`), ReasonNone, "user-1"},
		{"jku, x5u and jwk headers are ignored: verified with the JWKS key", "Bearer " + signRaw(t, rs, `{"alg":"RS256","kid":"k1","jku":"`+attacker.URL+`","x5u":"`+attacker.URL+`","jwk":`+string(evilJWK)+`}`, payload(times("", "", ""))), ReasonNone, "user-1"},

		// Keys and algorithms.
		{"signed by a key given in jwk and jku", "Bearer " + signRaw(t, evil, `{"alg":"RS256","kid":"k1","jku":"`+attacker.URL+`","x5u":"`+attacker.URL+`","jwk":`+string(evilJWK)+`}`, payload(times("", "", ""))), ReasonSignature, ""},
		{"ES256 with the RSA key's kid", "Bearer " + es.sign(t, claims(nil), "k1"), ReasonUnknownKID, ""},
		{"duplicate alg in the header: none first", "Bearer " + signRaw(t, evil, `{"alg":"none","alg":"RS256","kid":"k1"}`, payload(times("", "", ""))), ReasonSignature, ""},
		{"kid path traversal", "Bearer " + evil.sign(t, claims(nil), "../../../../etc/passwd"), ReasonUnknownKID, ""},
		{"kid SQL-ish", "Bearer " + evil.sign(t, claims(nil), "' OR '1'='1' --"), ReasonUnknownKID, ""},
		{"kid with a NUL", "Bearer " + evil.sign(t, claims(nil), "k1\x00"), ReasonUnknownKID, ""},
		{"kid of 4,000 bytes", "Bearer " + evil.sign(t, claims(nil), strings.Repeat("k", 4000)), ReasonUnknownKID, ""},
		// A kid that is not a string is no kid: every RS256 key is tried.
		{"kid a number", "Bearer " + signRaw(t, evil, `{"alg":"RS256","kid":1}`, payload(times("", "", ""))), ReasonSignature, ""},

		// Time claims of every spelling.
		{"exp a string", "Bearer " + withTimes("", "", `"9999999999"`), ReasonClaims, ""},
		{"nbf a string", "Bearer " + withTimes("", `"0"`, ""), ReasonClaims, ""},
		{"iat a string", "Bearer " + withTimes(`"0"`, "", ""), ReasonClaims, ""},
		{"exp an array", "Bearer " + withTimes("", "", fmt.Sprintf("[%d]", exp)), ReasonClaims, ""},
		{"exp negative", "Bearer " + withTimes("", "", "-1"), ReasonExpired, ""},
		{"exp zero", "Bearer " + withTimes("", "", "0"), ReasonExpired, ""},
		// An exp past int64 wraps to the far past inside the parser: expired,
		// which is the safe direction, before the range check is reached.
		{"exp past float range (1e400)", "Bearer " + withTimes("", "", "1e400"), ReasonExpired, ""},
		{"exp past int64 (1e19)", "Bearer " + withTimes("", "", "1e19"), ReasonExpired, ""},
		{"exp far but in range (year 33 million)", "Bearer " + withTimes("", "", "1e15"), ReasonNone, "user-1"},
		{"nbf past int64 (1e19)", "Bearer " + withTimes("", "1e19", ""), ReasonClaims, ""},
		{"nbf past float range (1e400)", "Bearer " + withTimes("", "1e400", ""), ReasonClaims, ""},
		{"nbf the largest int64", "Bearer " + withTimes("", "9223372036854775807", ""), ReasonClaims, ""},
		{"nbf just under the largest int64", "Bearer " + withTimes("", "9223372036000000000", ""), ReasonClaims, ""},
		{"iat past int64", "Bearer " + withTimes("1e19", "", ""), ReasonClaims, ""},
		{"nbf far in the past (negative past int64)", "Bearer " + withTimes("", "-1e19", ""), ReasonClaims, ""},

		// Spellings of the token itself.
		{"trailing dot", "Bearer " + good + ".", ReasonMalformed, ""},
		{"two trailing dots", "Bearer " + good + "..", ReasonMalformed, ""},
		{"base64 padding", "Bearer " + gp[0] + "=." + gp[1] + "." + gp[2], ReasonMalformed, ""},
		{"standard alphabet with padding", "Bearer " + std(gp[0]) + "." + std(gp[1]) + "." + std(gp[2]), ReasonMalformed, ""},
		{"a space inside", "Bearer " + gp[0] + ". " + gp[1] + "." + gp[2], ReasonMalformed, ""},
		{"a tab inside", "Bearer " + gp[0] + "\t." + gp[1] + "." + gp[2], ReasonMalformed, ""},
		// Go's base64 skips CR and LF even when strict: without the
		// alphabet check these were the same token, spelled anew each time
		// (a query or a cookie can carry them; each spelling its own cache
		// entry).
		{"a CR inside the payload", "Bearer " + gp[0] + "." + gp[1] + "\r." + gp[2], ReasonMalformed, ""},
		{"a LF inside the signature", "Bearer " + gp[0] + "." + gp[1] + "." + gp[2][:10] + "\n" + gp[2][10:], ReasonMalformed, ""},
		{"CR LF at the end of the signature", "Bearer " + good + "\r\n", ReasonMalformed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := up.calls
			w := do(h, "/", http.Header{"Authorization": {tc.auth}})
			if tc.reason == ReasonNone {
				if w.Code != http.StatusNoContent || up.calls != before+1 || up.p == nil || up.p.Subject != tc.sub {
					t.Fatalf("status %d %s, upstream calls %d, want the upstream to see %q", w.Code, w.Body, up.calls-before, tc.sub)
				}
				return
			}
			var body struct {
				Error  string `json:"error"`
				Status int    `json:"status"`
			}
			if w.Code != http.StatusUnauthorized || json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Status != 401 || body.Error != tc.reason.description() {
				t.Fatalf("status %d %s, want 401 %q", w.Code, w.Body, tc.reason.description())
			}
			if up.calls != before {
				t.Fatal("a refused token reached the upstream")
			}
		})
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("the server named in jku/x5u was asked %d times", n)
	}

	t.Run("a LF in a token in the query (the only source that can carry one)", func(t *testing.T) {
		f := parse(t, jwtYAML("      public_key_files: ["+pemFile(t, rs.pub)+"]\n      from: {query: access_token}", "RS256"), usersRoute)
		s := testSet(t, f, Options{Now: clk.Now})
		h, up := handler(t, s, f, 0)
		if w := do(h, "/p?access_token="+good, nil); w.Code != http.StatusNoContent {
			t.Fatalf("the token itself: %d %s", w.Code, w.Body)
		}
		for _, q := range []string{good + "%0A", good[:40] + "%0D%0A" + good[40:]} {
			if w := do(h, "/p?access_token="+q, nil); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), ReasonMalformed.description()) {
				t.Fatalf("%s: %d %s", q[len(q)-8:], w.Code, w.Body)
			}
		}
		if up.calls != 1 {
			t.Fatalf("the upstream got %d requests, want the one with the token itself", up.calls)
		}
	})
}
