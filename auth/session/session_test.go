package session

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)

func key(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func store(t testing.TB, c Config) *Store {
	t.Helper()
	if c.Name == "" {
		c.Name = "cw_session"
	}
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// request carries cookies as a browser would: one Cookie header.
func request(cs []*http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		parts = append(parts, c.Name+"="+c.Value)
	}
	if len(parts) > 0 {
		r.Header.Set("Cookie", strings.Join(parts, "; "))
	}
	return r
}

func seal(t testing.TB, s *Store, data []byte, created, now time.Time) []*http.Cookie {
	t.Helper()
	cs, err := s.Seal(data, created, now)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func flip(v string, i int) string {
	b := []byte(v)
	// Swap to another base64url character so the value still decodes.
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestOpen(t *testing.T) {
	k1, k2 := key(t), key(t)
	small := []byte(`{"sub":"alice"}`)
	large := bytes.Repeat([]byte("x"), 2*ChunkSize) // takes three chunks
	for _, tc := range []struct {
		desc    string
		sealer  Config
		opener  Config
		data    []byte
		now     time.Time // of Open; sealed at t0+1m, created at t0
		mangle  func([]*http.Cookie) []*http.Cookie
		want    error
		wantLen int // chunks
	}{
		{desc: "round trip", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0.Add(2 * time.Minute)},
		{desc: "empty payload", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: nil, now: t0.Add(2 * time.Minute)},
		{desc: "chunked round trip", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: large, now: t0.Add(2 * time.Minute), wantLen: 3},
		{desc: "no cookie", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0,
			mangle: func([]*http.Cookie) []*http.Cookie { return nil }, want: ErrNoSession},
		{desc: "tampered ciphertext", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie {
				cs[0].Value = flip(cs[0].Value, len(cs[0].Value)-30)
				return cs
			}, want: ErrInvalid},
		{desc: "tampered tag", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie { cs[0].Value = flip(cs[0].Value, len(cs[0].Value)-2); return cs }, want: ErrInvalid},
		{desc: "tampered key id", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie { cs[0].Value = flip(cs[0].Value, 3); return cs }, want: ErrInvalid},
		{desc: "truncated", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie { cs[0].Value = cs[0].Value[:20]; return cs }, want: ErrInvalid},
		{desc: "not base64", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie { cs[0].Value = "!!" + cs[0].Value; return cs }, want: ErrInvalid},
		{desc: "wrong key", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k2}}, data: small, now: t0.Add(2 * time.Minute), want: ErrInvalid},
		{desc: "rotated: old key still opens", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k2, k1}}, data: small, now: t0.Add(2 * time.Minute)},
		{desc: "rotated: new key opens", sealer: Config{Keys: [][]byte{k2, k1}}, opener: Config{Keys: [][]byte{k2}}, data: small, now: t0.Add(2 * time.Minute)},
		{desc: "retired key", sealer: Config{Keys: [][]byte{k1, k2}}, opener: Config{Keys: [][]byte{k2}}, data: small, now: t0.Add(2 * time.Minute), want: ErrInvalid},
		{desc: "other cookie name", sealer: Config{Name: "cw_state", Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie { cs[0].Name = "cw_session"; return cs }, want: ErrInvalid},
		{desc: "idle: just inside", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}, Idle: 30 * time.Minute}, data: small, now: t0.Add(31*time.Minute - time.Nanosecond)},
		{desc: "idle: expired", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}, Idle: 30 * time.Minute}, data: small, now: t0.Add(31 * time.Minute), want: ErrIdle},
		{desc: "absolute: just inside", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}, Absolute: 8 * time.Hour}, data: small, now: t0.Add(8*time.Hour - time.Nanosecond)},
		{desc: "absolute: expired though used", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}, Idle: 24 * time.Hour, Absolute: 8 * time.Hour}, data: small, now: t0.Add(8 * time.Hour), want: ErrExpired},
		{desc: "chunk missing (middle)", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: large, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie { return []*http.Cookie{cs[0], cs[2]} }, want: ErrInvalid},
		{desc: "chunk missing (last)", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: large, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie { return cs[:2] }, want: ErrInvalid},
		{desc: "chunks reordered", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: large, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie {
				cs[0].Value, cs[1].Value = cs[1].Value, cs[0].Value
				return cs
			}, want: ErrInvalid},
		{desc: "chunks sent out of order still open", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: large, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie { return []*http.Cookie{cs[2], cs[0], cs[1]} }, wantLen: 3},
		{desc: "stale extra chunk", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: large, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie {
				return append(cs, &http.Cookie{Name: "cw_session.3", Value: cs[2].Value})
			}, want: ErrInvalid},
		{desc: "single and chunks together", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie {
				return append(cs, &http.Cookie{Name: "cw_session.0", Value: cs[0].Value})
			}, want: ErrInvalid},
		{desc: "duplicate cookie", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}}, data: small, now: t0.Add(2 * time.Minute),
			mangle: func(cs []*http.Cookie) []*http.Cookie { return append(cs, cs[0]) }, want: ErrInvalid},
		{desc: "more chunks than the opener allows", sealer: Config{Keys: [][]byte{k1}}, opener: Config{Keys: [][]byte{k1}, MaxChunks: 2}, data: large, now: t0.Add(2 * time.Minute), want: ErrInvalid},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			sealer, opener := store(t, tc.sealer), store(t, tc.opener)
			cs := seal(t, sealer, tc.data, t0, t0.Add(time.Minute))
			if tc.mangle != nil {
				cs = tc.mangle(cs)
			}
			got, err := opener.Open(request(cs), tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				if got != nil {
					t.Fatal("a session alongside an error")
				}
				return
			}
			if !bytes.Equal(got.Data, tc.data) || !got.Created.Equal(t0) || !got.LastUsed.Equal(t0.Add(time.Minute)) || got.Chunks != tc.wantLen {
				t.Fatalf("got %d bytes created %v used %v chunks %d", len(got.Data), got.Created, got.LastUsed, got.Chunks)
			}
		})
	}
}

func TestSealOversize(t *testing.T) {
	s := store(t, Config{Keys: [][]byte{key(t)}, MaxChunks: 2})
	if _, err := s.Seal(bytes.Repeat([]byte("x"), 2*ChunkSize), t0, t0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Seal of 2 chunks' worth of payload (plus overhead) into 2: %v", err)
	}
	if _, err := s.Seal(bytes.Repeat([]byte("x"), 100*ChunkSize), t0, t0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Seal of a huge payload: %v", err)
	}
	cs, err := s.Seal(bytes.Repeat([]byte("x"), ChunkSize), t0, t0)
	if err != nil || len(cs) != 2 {
		t.Fatalf("Seal of one chunk's worth: %d cookies, %v", len(cs), err)
	}
	for _, c := range cs {
		if len(c.Name)+len(c.Value) > 4000 {
			t.Errorf("cookie %s has %d bytes", c.Name, len(c.Value))
		}
	}
}

func TestCookieAttributes(t *testing.T) {
	s := store(t, Config{Keys: [][]byte{key(t)}, Absolute: time.Hour, Path: "/app"})
	cs := seal(t, s, []byte("x"), t0, t0.Add(10*time.Minute))
	c := cs[0]
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/app" || c.MaxAge != 50*60 {
		t.Fatalf("cookie %+v", c)
	}
	line := c.String()
	for _, want := range []string{"Secure", "HttpOnly", "SameSite=Lax", "Max-Age=3000"} {
		if !strings.Contains(line, want) {
			t.Errorf("Set-Cookie %q lacks %s", line, want)
		}
	}
	// Without an absolute timeout, a browser-session cookie.
	s = store(t, Config{Keys: [][]byte{key(t)}, Idle: time.Hour})
	if c := seal(t, s, []byte("x"), t0, t0)[0]; c.MaxAge != 0 || strings.Contains(c.String(), "Max-Age") {
		t.Fatalf("cookie %q", c.String())
	}
}

// A session that shrinks from three chunks to one cookie expires the
// chunks, and the next request opens.
func TestWriteExpiresStaleChunks(t *testing.T) {
	s := store(t, Config{Keys: [][]byte{key(t)}})
	old := seal(t, s, bytes.Repeat([]byte("x"), 2*ChunkSize), t0, t0)
	r := request(append(old, &http.Cookie{Name: "other", Value: "1"}))
	w := httptest.NewRecorder()
	if err := s.Write(w, r, []byte("small"), t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	res := w.Result()
	jar := map[string]string{}
	for _, c := range old {
		jar[c.Name] = c.Value
	}
	jar["other"] = "1"
	for _, c := range res.Cookies() {
		if c.MaxAge < 0 {
			delete(jar, c.Name)
		} else {
			jar[c.Name] = c.Value
		}
	}
	if len(jar) != 2 || jar["other"] != "1" || jar["cw_session"] == "" {
		t.Fatalf("cookies after the write: %v", jar)
	}
	var next []*http.Cookie
	for n, v := range jar {
		next = append(next, &http.Cookie{Name: n, Value: v})
	}
	got, err := s.Open(request(next), t0.Add(2*time.Minute))
	if err != nil || string(got.Data) != "small" {
		t.Fatalf("Open: %v", err)
	}
	w = httptest.NewRecorder()
	s.Clear(w, request(next))
	if cs := w.Result().Cookies(); len(cs) != 1 || cs[0].Name != "cw_session" || cs[0].MaxAge >= 0 {
		t.Fatalf("Clear: %v", cs)
	}
}

func TestParseKeys(t *testing.T) {
	k := bytes.Repeat([]byte{0xfb}, KeySize) // +/ in standard base64, -_ in URL
	std, url := base64.StdEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k)
	for _, tc := range []struct {
		desc, in string
		n        int
		bad      bool
	}{
		{desc: "one standard", in: std, n: 1},
		{desc: "one url unpadded", in: url, n: 1},
		{desc: "comma list", in: std + "," + url, n: 2},
		{desc: "space and newline list", in: " " + std + "\n" + url + "\n", n: 2},
		{desc: "empty", in: " , ", bad: true},
		{desc: "short key", in: base64.StdEncoding.EncodeToString(k[:16]), bad: true},
		{desc: "not base64", in: "not*base64", bad: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			keys, err := ParseKeys(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatal("accepted")
				}
				if strings.Contains(err.Error(), std) {
					t.Fatal("the error holds the key")
				}
				return
			}
			if err != nil || len(keys) != tc.n || !bytes.Equal(keys[0], k) {
				t.Fatalf("%d keys, %v", len(keys), err)
			}
		})
	}
	t.Setenv("CW_TEST_SESSION_KEYS", std)
	if keys, err := KeysFromEnv("CW_TEST_SESSION_KEYS"); err != nil || len(keys) != 1 {
		t.Fatalf("KeysFromEnv: %v", err)
	}
	if _, err := KeysFromEnv("CW_TEST_SESSION_KEYS_UNSET"); err == nil {
		t.Fatal("an unset variable gave keys")
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		desc string
		c    Config
	}{
		{desc: "no name", c: Config{Keys: [][]byte{make([]byte, KeySize)}}},
		{desc: "bad name", c: Config{Name: "a;b", Keys: [][]byte{make([]byte, KeySize)}}},
		{desc: "no keys", c: Config{Name: "s"}},
		{desc: "short key", c: Config{Name: "s", Keys: [][]byte{make([]byte, 16)}}},
		{desc: "negative idle", c: Config{Name: "s", Keys: [][]byte{make([]byte, KeySize)}, Idle: -1}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := New(tc.c); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestOwns(t *testing.T) {
	s := store(t, Config{Keys: [][]byte{key(t)}})
	for name, want := range map[string]bool{"cw_session": true, "cw_session.0": true, "cw_session.12": true, "cw_session.": false, "cw_session.x": false, "cw_sessionx": false, "other": false} {
		if s.Owns(name) != want {
			t.Errorf("Owns(%q) = %v", name, !want)
		}
	}
}

// FuzzOpen: whatever Cookie header arrives, Open never panics, and the only
// values that open are ones the store sealed.
func FuzzOpen(f *testing.F) {
	k := bytes.Repeat([]byte{7}, KeySize)
	s, err := New(Config{Name: "cw_session", Keys: [][]byte{k}, Idle: time.Hour, Absolute: 8 * time.Hour, MaxChunks: 3})
	if err != nil {
		f.Fatal(err)
	}
	for _, data := range [][]byte{[]byte("seed"), bytes.Repeat([]byte("y"), ChunkSize)} {
		cs, err := s.Seal(data, t0, t0)
		if err != nil {
			f.Fatal(err)
		}
		var parts []string
		for _, c := range cs {
			parts = append(parts, c.Name+"="+c.Value)
		}
		f.Add(strings.Join(parts, "; "))
	}
	f.Add("cw_session=")
	f.Add("cw_session.0=AQ; cw_session.1=AQ; cw_session.2=AQ")
	f.Add("cw_session.00=x; cw_session.-1=y; cw_session.99999999999999999999=z")
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cookie", header)
		got, err := s.Open(r, t0.Add(time.Minute))
		if err != nil {
			if got != nil {
				t.Fatal("a session alongside an error")
			}
			return
		}
		if string(got.Data) != "seed" && !bytes.Equal(got.Data, bytes.Repeat([]byte("y"), ChunkSize)) {
			t.Fatalf("opened a value never sealed: %q", got.Data)
		}
	})
}

// BenchmarkOpen is the cost of verifying a session on each request: a
// typical OIDC session (claims, tokens: about 2.5 KB, one cookie) among a
// few other cookies. The target is at most 5 µs.
func BenchmarkOpen(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"small-200B", 200}, {"typical-2.5KB", 2500}, {"chunked-8KB", 8000}} {
		b.Run(bc.name, func(b *testing.B) {
			s := store(b, Config{Keys: [][]byte{key(b), key(b)}, Idle: time.Hour, Absolute: 8 * time.Hour})
			cs := seal(b, s, bytes.Repeat([]byte("z"), bc.size), t0, t0)
			r := request(append([]*http.Cookie{{Name: "_ga", Value: "GA1.1.123456789.1700000000"}, {Name: "theme", Value: "dark"}}, cs...))
			now := t0.Add(time.Minute)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Open(r, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
