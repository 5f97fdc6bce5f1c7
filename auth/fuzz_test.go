package auth

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http/httpguts"

	"github.com/causewayhq/causeway/routes"
)

// fuzzSecret is fixed so that the committed seed corpus
// (testdata/fuzz/FuzzVerifyToken) holds tokens that verify.
const fuzzSecret = "causeway-fuzz-secret-0123456789abcdef"

// fuzzSet is an HS256 authenticator and an RS256 one, the two code paths a
// token can take (secret, public keys).
func fuzzSet(f *testing.F) (*Set, *routes.File, *jwtAuth, *jwtAuth) {
	f.Setenv("CW_FUZZ_SECRET", fuzzSecret)
	rs := signerFor(f, "RS256", 0)
	file := parse(f, jwtYAML("      hmac_secret_env: CW_FUZZ_SECRET\n      token_cache: 0", "HS256")+"\n"+
		strings.Replace(jwtYAML("      public_key_files: ["+pemFile(f, rs.pub)+"]", "RS256", "PS256"), "users:", "keys:", 1),
		`{name: r, match: {path_prefix: /}, upstream: up, auth: [users, keys], require_claims: {scope: read}}`)
	s, err := NewSet(f.Context(), file, nil, Options{Now: newClock().Now, Logger: quiet})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	return s, file, s.auths["users"].(*jwtAuth), s.auths["keys"].(*jwtAuth)
}

// FuzzVerifyToken: whatever the token, verification neither panics nor
// answers with a reason outside the bounded set, and anything it accepts
// carries a subject taken from its claims.
func FuzzVerifyToken(f *testing.F) {
	_, _, hs, rsa := fuzzSet(f)
	hsSigner := signer{alg: "HS256", method: jwt.SigningMethodHS256, priv: []byte(fuzzSecret)}
	f.Add(hsSigner.sign(f, claims(nil), ""))
	f.Add(signerFor(f, "RS256", 0).sign(f, claims(nil), "k1"))
	f.Add(signerFor(f, "PS256", 0).sign(f, claims(map[string]any{"aud": []any{"x", "api"}}), ""))
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("a.b.c")
	f.Add("..")
	// Time claims past int64, and a valid token with a newline inside.
	f.Add(hsSigner.sign(f, claims(map[string]any{"nbf": 1e19}), ""))
	f.Add(hsSigner.sign(f, claims(map[string]any{"iat": -1e19, "exp": 1e300}), ""))
	good := hsSigner.sign(f, claims(nil), "")
	f.Add(good[:len(good)-5] + "\n" + good[len(good)-5:]) // in the signature: the signing input is unchanged
	f.Fuzz(func(t *testing.T, tok string) {
		for _, a := range []*jwtAuth{hs, rsa} {
			p, reason := a.verify(t.Context(), tok)
			if p == nil {
				if reason == ReasonNone || !slices.Contains(Reasons, reason) {
					t.Fatalf("refused with reason %q", reason)
				}
				continue
			}
			if reason != ReasonNone {
				t.Fatalf("accepted with reason %q", reason)
			}
			if sub, _ := p.Claims["sub"].(string); sub != p.Subject {
				t.Fatalf("subject %q, claims sub %v", p.Subject, p.Claims["sub"])
			}
			if len(tok) > a.maxBytes {
				t.Fatalf("accepted a token of %d bytes", len(tok))
			}
			// One spelling per token, and time claims a time can hold.
			if strings.ContainsAny(tok, "\r\n =+/") {
				t.Fatalf("accepted a token spelled %q", tok)
			}
			// Read from the number as written, not through the parser's
			// conversion, which is what wrapped past int64.
			if n, ok := p.Claims["nbf"].(json.Number); ok {
				if f, err := n.Float64(); err != nil || f > float64(a.now().Add(a.leeway).Unix()+1) {
					t.Fatalf("accepted a token not valid before %s", n)
				}
			}
		}
	})
}

// FuzzAuthorizationHeader: any Authorization header (and any X-Api-Key)
// through the full middleware gives 204/401/403, a challenge that is a valid
// header value, and never a token with blanks in it.
func FuzzAuthorizationHeader(f *testing.F) {
	s, file, _, _ := fuzzSet(f)
	mw, err := s.Middleware(file.Routes[0])
	if err != nil {
		f.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if FromContext(r.Context()) == nil {
			t := r.Header.Get("Authorization")
			panic("upstream reached without a principal: " + t)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	hsSigner := signer{alg: "HS256", method: jwt.SigningMethodHS256, priv: []byte(fuzzSecret)}
	f.Add("Bearer " + hsSigner.sign(f, claims(map[string]any{"scope": "read write"}), ""))
	f.Add("bearer   x.y.z  ")
	f.Add("Basic dXNlcjpwYXNz")
	f.Add("Bearer")
	f.Add("Bearer a b")
	f.Add("Bearer\ttab")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		if tok, reason := bearerToken([]string{v}); reason == ReasonNone {
			if tok == "" || strings.ContainsAny(tok, " \t") {
				t.Fatalf("token %q from %q", tok, v)
			}
		} else if reason != ReasonMissing && reason != ReasonMalformed {
			t.Fatalf("reason %q", reason)
		}
		w := do(h, "/", http.Header{"Authorization": {v}})
		switch w.Code {
		case http.StatusNoContent, http.StatusUnauthorized, http.StatusForbidden:
		default:
			t.Fatalf("status %d", w.Code)
		}
		for _, ch := range w.Header().Values("WWW-Authenticate") {
			if !httpguts.ValidHeaderFieldValue(ch) {
				t.Fatalf("challenge %q is not a valid header value", ch)
			}
		}
		if w.Code != http.StatusNoContent && len(w.Header().Values("WWW-Authenticate")) == 0 {
			t.Fatal("refused without a challenge")
		}
	})
}

// TestFuzzSeeds keeps the committed corpus meaningful: its tokens verify,
// or fail, for the reason their file name gives.
func TestFuzzSeeds(t *testing.T) {
	t.Setenv("CW_FUZZ_SECRET", fuzzSecret)
	file := parse(t, jwtYAML("      hmac_secret_env: CW_FUZZ_SECRET", "HS256"), usersRoute)
	s := testSet(t, file, Options{Now: newClock().Now})
	a := s.auths["users"].(*jwtAuth)
	want := map[string]Reason{
		"valid_hs256": ReasonNone, "valid_with_scope": ReasonNone, "valid_aud_array": ReasonNone, "nested_claims": ReasonNone,
		"expired": ReasonExpired, "not_yet_valid": ReasonNotYetValid, "wrong_issuer": ReasonIssuer,
		"wrong_audience": ReasonAudience, "no_exp": ReasonClaims, "bad_signature": ReasonSignature,
		"alg_none": ReasonAlgorithm, "alg_rs256_hmac_signed": ReasonAlgorithm, "two_segments": ReasonMalformed,
		"padded_base64": ReasonMalformed, "kid_traversal": ReasonNone,
	}
	for name, reason := range want {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/fuzz/FuzzVerifyToken", name))
			if err != nil {
				t.Fatal(err)
			}
			line := strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[1])
			tok, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "string("), ")"))
			if err != nil {
				t.Fatal(err)
			}
			if _, got := a.verify(t.Context(), tok); got != reason {
				t.Fatalf("reason %q, want %q", got, reason)
			}
		})
	}
}

// FuzzHtpasswd: whatever the file, parsing neither panics nor takes a line
// it cannot verify with, and an error never carries the text after the
// first colon of a line (the hash, or a plaintext password).
func FuzzHtpasswd(f *testing.F) {
	f.Add("alice:$2y$04$3Xh8Yl0mFZ7sGQOQ3WvB8eS3xXo0dHc6Y5oUeS2mqb7tF1p0aWc2u\n")
	f.Add("bob:$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQxNmJ5dGVzIQ$N2Y5q2Q3bR0qYlqgLwq9kR8k2mS3zj9k7XU8Ww0v9sE\n")
	f.Add("u:$apr1$x$y\nv:{SHA}abc\n# c\n\nw:plain\n")
	f.Add("a:b:c\n:x\n\r\n")
	f.Fuzz(func(t *testing.T, data string) {
		users, _, errs := parseHtpasswd("f", []byte(data), "staff")
		for name, u := range users {
			if name == "" || u.hash == nil || u.p.Subject != name || strings.ContainsAny(name, " \t\r\n") {
				t.Fatalf("accepted user %q", name)
			}
		}
		for i, line := range strings.Split(data, "\n") {
			user, rest, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
			// Short or format-looking text may be in an error by chance.
			if !ok || len(rest) < 8 || strings.Contains(argon2idFormat, rest) || strings.Contains(user, rest) {
				continue
			}
			for _, err := range errs {
				msg, ours := strings.CutPrefix(err.Error(), "f:"+strconv.Itoa(i+1)+":")
				msg = strings.ReplaceAll(msg, strconv.Quote(user), "")
				if ours && strings.Contains(msg, rest) {
					t.Fatalf("error %q shows %q", err, rest)
				}
			}
		}
	})
}

// FuzzBasicCredentials: the Authorization parser never panics, answers
// only with a known reason, and what it accepts decodes back to itself.
func FuzzBasicCredentials(f *testing.F) {
	f.Add("Basic YWxpY2U6d29uZGVybGFuZA==")
	f.Add("basic   YTpi")
	f.Add("Basic YWxpY2U")
	f.Add("Bearer x")
	f.Add("Basic ")
	f.Fuzz(func(t *testing.T, v string) {
		user, password, reason := basicCredentials([]string{v})
		if reason != ReasonNone {
			if !slices.Contains(Reasons, reason) || user != "" || password != "" {
				t.Fatalf("reason %q with %q:%q", reason, user, password)
			}
			return
		}
		if user == "" || strings.Contains(user, ":") {
			t.Fatalf("accepted user %q", user)
		}
	})
}

// FuzzOPADecision: whatever OPA answers, reading it never panics; an allow
// never sets a header the edge owns nor one that is not valid HTTP; a
// denial's status is one a denial can have and its headers carry no
// framing.
func FuzzOPADecision(f *testing.F) {
	f.Add(`{"result": true}`)
	f.Add(`{"result": false}`)
	f.Add(`{}`)
	f.Add(`{"result": {"allowed": true, "headers": {"x-user": "a", "x-forwarded-for": "1.2.3.4", "x-multi": ["a", "b"]}, "request_headers_to_remove": ["authorization", "host"], "dynamic_metadata": {"sub": "a"}}}`)
	f.Add(`{"result": {"allowed": false, "http_status": 302, "body": "x", "response_headers_to_add": {"location": "/login", "content-length": "1"}}}`)
	f.Add(`{"result": {"allowed": "yes"}}`)
	f.Fuzz(func(t *testing.T, raw string) {
		d, err := opaDecision([]byte(raw))
		if err != nil {
			return
		}
		if d.allow {
			for k, vs := range d.set {
				if routes.ForbiddenAuthzHeader(k) || !httpguts.ValidHeaderFieldName(k) {
					t.Fatalf("allow sets %q", k)
				}
				for _, v := range vs {
					if !httpguts.ValidHeaderFieldValue(v) {
						t.Fatalf("allow sets %q: %q", k, v)
					}
				}
			}
			for _, k := range d.remove {
				if routes.ForbiddenAuthzHeader(k) {
					t.Fatalf("allow removes %q", k)
				}
			}
			return
		}
		if d.status < 300 || d.status > 599 || d.status == http.StatusNotModified {
			t.Fatalf("denial status %d", d.status)
		}
		for k := range d.header {
			if k == "Content-Length" || k == "Transfer-Encoding" || k == "Connection" || !httpguts.ValidHeaderFieldName(k) {
				t.Fatalf("denial sets %q", k)
			}
		}
	})
}
