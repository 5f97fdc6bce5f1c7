package auth

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/causewayhq/causeway/routes"
)

// BenchmarkVerify is the cost of one token verification per algorithm,
// with the token cache off (a signature check every time) and on (the same
// token again, as a client sends it on every request).
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA", "HS256"} {
		for _, cache := range []int{0, 4096} {
			b.Run(fmt.Sprintf("%s/cache=%d", alg, cache), func(b *testing.B) {
				a, tok := benchAuth(b, alg, cache)
				ctx := b.Context()
				b.ReportAllocs()
				for b.Loop() {
					if _, r := a.verify(ctx, tok); r != ReasonNone {
						b.Fatal(r)
					}
				}
			})
		}
	}
}

// BenchmarkVerifyDistinctTokens is the cache's worst case: every request a
// different token, so every lookup misses and every entry is stored.
func BenchmarkVerifyDistinctTokens(b *testing.B) {
	for _, cache := range []int{0, 4096} {
		b.Run(fmt.Sprintf("ES256/cache=%d", cache), func(b *testing.B) {
			a, _ := benchAuth(b, "ES256", cache)
			sg := signerFor(b, "ES256", 0)
			toks := make([]string, 8192)
			for i := range toks {
				toks[i] = sg.sign(b, claims(map[string]any{"jti": i}), "")
			}
			ctx := b.Context()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, r := a.verify(ctx, toks[i%len(toks)]); r != ReasonNone {
					b.Fatal(r)
				}
				i++
			}
		})
	}
}

func benchAuth(b *testing.B, alg string, cache int) (*jwtAuth, string) {
	_, a, tok := benchSet(b, alg, cache)
	return a, tok
}

func benchSet(b *testing.B, alg string, cache int) (*Set, *jwtAuth, string) {
	sg := signerFor(b, alg, 0)
	var src string
	if alg == "HS256" {
		b.Setenv("CW_BENCH_SECRET", string(sg.priv.([]byte)))
		src = "      hmac_secret_env: CW_BENCH_SECRET"
	} else {
		src = "      public_key_files: [" + pemFile(b, sg.pub) + "]"
	}
	src += fmt.Sprintf("\n      token_cache: %d", cache)
	f := parse(b, jwtYAML(src, alg), usersRoute)
	s := testSet(b, f, Options{Now: newClock().Now})
	return s, s.auths["users"].(*jwtAuth), sg.sign(b, claims(nil), "")
}

// BenchmarkHTTP is requests per second through a real HTTP server (loopback
// TCP, keep-alive clients in parallel) whose handler chain is the route
// middleware and a 204 upstream, against the same chain without auth.
func BenchmarkHTTP(b *testing.B) {
	cases := []struct {
		name  string
		alg   string
		cache int
	}{
		{"no-auth", "", 0},
		{"ES256/cache=0", "ES256", 0},
		{"ES256/cache=4096", "ES256", 4096},
		{"RS256/cache=0", "RS256", 0},
		{"RS256/cache=4096", "RS256", 4096},
		{"HS256/cache=0", "HS256", 0},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
			hdr := http.Header{}
			if c.alg != "" {
				s, _, tok := benchSet(b, c.alg, c.cache)
				mw, err := s.Middleware(routes.Route{Name: "r", Auth: routes.StringList{"users"}})
				if err != nil {
					b.Fatal(err)
				}
				h = mw(h)
				hdr.Set("Authorization", "Bearer "+tok)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, srv.URL+"/x", nil)
					req.Header = hdr.Clone()
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusNoContent {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}

// BenchmarkMiddleware is the in-process handler chain (no sockets): what
// the middleware adds to a request, copy of the headers included.
func BenchmarkMiddleware(b *testing.B) {
	for _, c := range []struct {
		name  string
		alg   string
		cache int
	}{{"no-auth", "", 0}, {"HS256/cache=0", "HS256", 0}, {"ES256/cache=0", "ES256", 0}, {"ES256/cache=4096", "ES256", 4096}} {
		b.Run(c.name, func(b *testing.B) {
			var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			req.Header.Set("User-Agent", "bench")
			req.Header.Set("Accept", "*/*")
			if c.alg != "" {
				s, _, tok := benchSet(b, c.alg, c.cache)
				mw, err := s.Middleware(routes.Route{Name: "r", Auth: routes.StringList{"users"}})
				if err != nil {
					b.Fatal(err)
				}
				h = mw(h)
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					clear(w.h)
					h.ServeHTTP(w, req)
					if w.code != http.StatusNoContent {
						b.Errorf("status %d", w.code)
						return
					}
				}
			})
		})
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }

// BenchmarkBasic is the cost of one basic-auth check: a bcrypt (cost 10,
// htpasswd -B's default is 5, 10 and up is what guides recommend) or
// argon2id (m=64 MiB, t=1, p=4: RFC 9106's second recommendation) verify,
// against the same credentials served from the verified-credential cache.
func BenchmarkBasic(b *testing.B) {
	bc, err := bcrypt.GenerateFromPassword([]byte("wonderland"), 10)
	if err != nil {
		b.Fatal(err)
	}
	salt := []byte("somesalt16bytes!")
	key := argon2.IDKey([]byte("wonderland"), salt, 1, 64<<10, 4, 32)
	a2 := fmt.Sprintf("$argon2id$v=19$m=%d,t=1,p=4$%s$%s", 64<<10, base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
	for _, hash := range []struct{ name, line string }{{"bcrypt-10", "alice:" + string(bc)}, {"argon2id-64MiB", "alice:" + a2}} {
		for _, ttl := range []string{"0s", "30s"} {
			b.Run(hash.name+"/cache_ttl="+ttl, func(b *testing.B) {
				f := parse(b, basicYAML(b, "\n      cache_ttl: "+ttl, hash.line), `{name: r, match: {path_prefix: /}, upstream: up, auth: staff}`)
				s := testSet(b, f, Options{Now: newClock().Now})
				a := s.auths["staff"].(*basicAuth)
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.Header = basicHeader("alice", "wonderland")
				b.ReportAllocs()
				for b.Loop() {
					if p, reason, _ := a.check(r); p == nil {
						b.Fatal(reason)
					}
				}
			})
		}
	}
}

// BenchmarkExtAuthz is one request through the route middleware with an
// ext_authz authenticator on loopback (one at a time: the latency a
// request pays), against a direct Check call from a plain grpc-go client
// and a plain HTTP GET to the same servers: the difference is what the
// edge adds around the call (building the CheckRequest, the header rules,
// the principal, the span).
func BenchmarkExtAuthz(b *testing.B) {
	srv := newAuthzServer(b, policy)
	fa := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Auth-User", "alice")
		w.WriteHeader(http.StatusOK)
	}))
	defer fa.Close()
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	request := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/orders/7", nil)
		r.Header.Set("Authorization", "Bearer good-alice")
		r.Header.Set("User-Agent", "bench")
		return r
	}
	run := func(b *testing.B, h http.Handler) {
		req := request()
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			h.ServeHTTP(w, req)
			if w.code != http.StatusNoContent {
				b.Fatalf("status %d", w.code)
			}
		}
	}
	for _, c := range []struct{ name, yaml string }{
		{"grpc", "grpc_address: " + srv.addr},
		{"grpc/cache", "grpc_address: " + srv.addr + "\n      cache: {ttl: 1m, key: [header:Authorization]}"},
		{"http", "http_url: " + fa.URL + "\n      upstream_headers: [X-Auth-User]"},
	} {
		b.Run("middleware/"+c.name, func(b *testing.B) {
			f := parse(b, "  authz:\n    ext_authz:\n      "+c.yaml, `{name: r, match: {path_prefix: /}, upstream: up, auth: authz}`)
			mw, err := testSet(b, f, Options{}).Middleware(f.Routes[0])
			if err != nil {
				b.Fatal(err)
			}
			run(b, mw(next))
		})
	}
	b.Run("direct/grpc", func(b *testing.B) {
		g, err := newGRPCAuthz(srv.addr, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer g.close()
		req := checkRequest(&checkInput{r: request(), headers: request().Header}, nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := g.client.Check(b.Context(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct/http", func(b *testing.B) {
		tr := &http.Transport{MaxIdleConnsPerHost: 4}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequestWithContext(b.Context(), http.MethodGet, fa.URL, nil)
			req.Header = request().Header
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
