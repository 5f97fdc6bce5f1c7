package auth

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/causewayhq/causeway/ratelimit"
)

// needTool finds a peer `make deps` installs; a missing one fails the test
// rather than skipping it, since the checks it makes would silently vanish.
func needTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (Debian %s; make deps installs it)", name, pkg)
	}
	return p
}

// htpasswdLine is what `htpasswd -B` writes: the real tool, so the file
// format and the $2y$ prefix are the ones users have.
func htpasswdLine(t testing.TB, user, password string) string {
	t.Helper()
	out, err := exec.Command(needTool(t, "htpasswd", "apache2-utils"), "-nbB", "-C", "4", user, password).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// argon2Line is what the reference argon2 tool encodes (-e), small
// parameters to keep the tests fast.
func argon2Line(t testing.TB, user, password string) string {
	t.Helper()
	cmd := exec.Command(needTool(t, "argon2", "argon2"), "somesalt16bytes!", "-id", "-t", "1", "-m", "6", "-p", "1", "-e")
	cmd.Stdin = strings.NewReader(password)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("argon2: %v", err)
	}
	return user + ":" + strings.TrimSpace(string(out))
}

func basicYAML(t testing.TB, extra string, lines ...string) string {
	path := writeFile(t, "users.htpasswd", []byte("# staff\n\n"+strings.Join(lines, "\n")+"\n"))
	return "  staff:\n    basic:\n      htpasswd_file: " + path + extra
}

func basicHeader(user, password string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))}}
}

func TestBasic(t *testing.T) {
	lines := []string{htpasswdLine(t, "alice", "wonderland"), argon2Line(t, "bob", "builder"), htpasswdLine(t, "carol", strings.Repeat("p", 72))}
	tests := []struct {
		name   string
		extra  string
		header http.Header
		status int
		who    string
		reason Reason
		fwd    string // X-User at the upstream
	}{
		{"bcrypt from htpasswd -B", "", basicHeader("alice", "wonderland"), 204, "alice", "", ""},
		{"argon2id from the reference tool", "", basicHeader("bob", "builder"), 204, "bob", "", ""},
		{"scheme is case-insensitive", "", http.Header{"Authorization": {"bAsIc " + base64.StdEncoding.EncodeToString([]byte("alice:wonderland"))}}, 204, "alice", "", ""},
		{"wrong password", "", basicHeader("alice", "wonderlanD"), 401, "", ReasonBadCredentials, ""},
		{"unknown user", "", basicHeader("mallory", "wonderland"), 401, "", ReasonBadCredentials, ""},
		{"another user's password", "", basicHeader("bob", "wonderland"), 401, "", ReasonBadCredentials, ""},
		{"missing", "", nil, 401, "", ReasonMissing, ""},
		{"bearer is not basic", "", bearer("x.y.z"), 401, "", ReasonMissing, ""},
		{"two headers", "", http.Header{"Authorization": {basicHeader("alice", "wonderland")["Authorization"][0], basicHeader("bob", "builder")["Authorization"][0]}}, 401, "", ReasonMalformed, ""},
		{"not base64", "", http.Header{"Authorization": {"Basic alice:wonderland"}}, 401, "", ReasonMalformed, ""},
		{"unpadded base64", "", http.Header{"Authorization": {"Basic " + base64.RawStdEncoding.EncodeToString([]byte("alice:wonderland"))}}, 401, "", ReasonMalformed, ""},
		{"no colon", "", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("alice"))}}, 401, "", ReasonMalformed, ""},
		{"empty user", "", basicHeader("", "wonderland"), 401, "", ReasonMalformed, ""},
		{"oversized", "", http.Header{"Authorization": {"Basic " + strings.Repeat("QUFB", 2000)}}, 401, "", ReasonOversized, ""},
		{"password with colons", "", basicHeader("alice", "wonder:land"), 401, "", ReasonBadCredentials, ""},
		// bcrypt reads 72 bytes: a longer password with the right prefix
		// must not pass as the stored one.
		{"bcrypt 72 bytes", "", basicHeader("carol", strings.Repeat("p", 72)), 204, "carol", "", ""},
		{"bcrypt past 72 bytes", "", basicHeader("carol", strings.Repeat("p", 72)+"extra"), 401, "", ReasonBadCredentials, ""},
		{"forward user, spoof removed", "\n      forward_user: X-User", http.Header{"Authorization": basicHeader("alice", "wonderland")["Authorization"], "X-User": {"admin"}}, 204, "alice", "", "alice"},
		{"spoof removed on failure paths too", "\n      forward_user: X-User", http.Header{"X-User": {"admin"}}, 401, "", ReasonMissing, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := parse(t, basicYAML(t, tt.extra, lines...), `{name: r, match: {path_prefix: /}, upstream: up, auth: staff}`)
			fails := failuresVec()
			s := testSet(t, f, Options{Failures: fails})
			h, up := handler(t, s, f, 0)
			w := do(h, "/", tt.header)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.status != 204 {
				if got := w.Header().Get("WWW-Authenticate"); got != `Basic realm="staff", charset="UTF-8"` {
					t.Fatalf("challenge %q", got)
				}
				if up.calls != 0 {
					t.Fatal("the upstream was called")
				}
				if got := counter(fails, "staff", string(tt.reason)); got != 1 {
					t.Fatalf("failures{%s} = %v", tt.reason, got)
				}
				if strings.Contains(w.Body.String(), "wonderland") || strings.Contains(w.Body.String(), "alice") {
					t.Fatalf("the body echoes the credential: %s", w.Body)
				}
				return
			}
			if up.p == nil || up.p.Subject != tt.who || up.p.Authenticator != "staff" {
				t.Fatalf("principal %+v", up.p)
			}
			if v, ok := up.header["Authorization"]; ok {
				t.Fatalf("the upstream got the credentials: %q", v)
			}
			if got := up.header.Get("X-User"); got != tt.fwd {
				t.Fatalf("X-User %q, want %q", got, tt.fwd)
			}
			if v, _ := up.p.Claim("sub"); v != tt.who {
				t.Fatalf("sub claim %q", v)
			}
		})
	}
}

func TestBasicKeepToken(t *testing.T) {
	line := htpasswdLine(t, "alice", "wonderland")
	f := parse(t, basicYAML(t, "\n      keep_token: true", line), `{name: r, match: {path_prefix: /}, upstream: up, auth: staff}`)
	h, up := handler(t, testSet(t, f, Options{}), f, 0)
	hdr := basicHeader("alice", "wonderland")
	if w := do(h, "/", hdr); w.Code != 204 {
		t.Fatalf("status %d", w.Code)
	}
	if got := up.header.Get("Authorization"); got != hdr.Get("Authorization") {
		t.Fatalf("kept Authorization %q", got)
	}
}

// A route taking a bearer token or basic credentials: whichever wins, the
// other's strip must not remove a kept Authorization header (both live
// there), and a refused request gets both challenges.
func TestBasicWithJWT(t *testing.T) {
	s256 := signerFor(t, "HS256", 0)
	secret := writeFile(t, "secret", s256.priv.([]byte))
	yaml := basicYAML(t, "", htpasswdLine(t, "alice", "wonderland")) +
		"\n  users:\n    jwt:\n      hmac_secret_file: " + secret + "\n      algorithms: [HS256]\n      keep_token: true"
	f := parse(t, yaml, `{name: r, match: {path_prefix: /}, upstream: up, auth: [users, staff]}`)
	h, up := handler(t, testSet(t, f, Options{Now: newClock().Now}), f, 0)
	tok := s256.sign(t, claims(nil), "")
	if w := do(h, "/", bearer(tok)); w.Code != 204 || up.header.Get("Authorization") != "Bearer "+tok {
		t.Fatalf("bearer: status %d, Authorization %q", w.Code, up.header.Get("Authorization"))
	}
	if w := do(h, "/", basicHeader("alice", "wonderland")); w.Code != 204 || up.p.Subject != "alice" {
		t.Fatalf("basic: status %d", w.Code)
	}
	w := do(h, "/", nil)
	if got := w.Header().Values("WWW-Authenticate"); len(got) != 2 || !strings.HasPrefix(got[0], "Bearer ") || !strings.HasPrefix(got[1], "Basic ") {
		t.Fatalf("challenges %q", got)
	}
}

func TestBasicRequireClaims(t *testing.T) {
	f := parse(t, basicYAML(t, "", htpasswdLine(t, "alice", "wonderland"), htpasswdLine(t, "bob", "builder")),
		`{name: r, match: {path_prefix: /}, upstream: up, auth: staff, require_claims: {sub: alice}}`)
	h, _ := handler(t, testSet(t, f, Options{}), f, 0)
	if w := do(h, "/", basicHeader("alice", "wonderland")); w.Code != 204 {
		t.Fatalf("alice: %d", w.Code)
	}
	if w := do(h, "/", basicHeader("bob", "builder")); w.Code != 403 {
		t.Fatalf("bob: %d", w.Code)
	}
}

// countingHash counts verifications, to see the cache at work.
type countingHash struct {
	passwordHash
	n *atomic.Int64
}

func (c countingHash) verify(p []byte) bool { c.n.Add(1); return c.passwordHash.verify(p) }

func TestBasicCache(t *testing.T) {
	for _, ttl := range []string{"", "\n      cache_ttl: 0s"} {
		t.Run("cache_ttl="+strings.TrimSpace(strings.TrimPrefix(ttl, "\n      cache_ttl:")), func(t *testing.T) {
			clock := newClock()
			f := parse(t, basicYAML(t, ttl, htpasswdLine(t, "alice", "wonderland")), `{name: r, match: {path_prefix: /}, upstream: up, auth: staff}`)
			s := testSet(t, f, Options{Now: clock.Now})
			var n atomic.Int64
			b := s.auths["staff"].(*basicAuth)
			b.users["alice"].hash = countingHash{b.users["alice"].hash, &n}
			h, _ := handler(t, s, f, 0)
			for range 5 {
				if w := do(h, "/", basicHeader("alice", "wonderland")); w.Code != 204 {
					t.Fatalf("status %d", w.Code)
				}
			}
			// A wrong password is never served from the cache.
			if w := do(h, "/", basicHeader("alice", "wonderlanD")); w.Code != 401 {
				t.Fatalf("wrong password: %d", w.Code)
			}
			want := int64(6)
			if ttl == "" {
				want = 2
			}
			if got := n.Load(); got != want {
				t.Fatalf("%d verifications, want %d", got, want)
			}
			clock.Add(31 * time.Second)
			do(h, "/", basicHeader("alice", "wonderland"))
			if got := n.Load(); got != want+1 {
				t.Fatalf("after the TTL: %d verifications, want %d", got, want+1)
			}
		})
	}
}

// A brute force from one address: past the failure limit every attempt,
// the right password included, gets 429 with Retry-After and never reaches
// the upstream; other clients are not affected; the limit recovers at its
// rate. Many goroutines at once, under -race.
func TestBasicBruteForce(t *testing.T) {
	clock := newClock()
	f := parse(t, basicYAML(t, "\n      failure_limit: {limit: 5, per: 1m}", htpasswdLine(t, "alice", "wonderland")),
		`{name: r, match: {path_prefix: /}, upstream: up, auth: staff}`)
	fails := failuresVec()
	s := testSet(t, f, Options{Now: clock.Now, Failures: fails, FailureLimiter: ratelimit.NewMemory(clock.Now)})
	h, up := handler(t, s, f, 0)
	from := func(addr string, hdr http.Header) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = addr + ":40000"
		for k, v := range hdr {
			r.Header[k] = v
		}
		return recorder(h, r)
	}
	const attackers = 8
	var wg sync.WaitGroup
	var got401, got429 atomic.Int64
	for i := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 25 {
				w := from("192.0.2.1", basicHeader("alice", fmt.Sprintf("guess-%d-%d", i, j)))
				switch w.Code {
				case 401:
					got401.Add(1)
				case 429:
					got429.Add(1)
				default:
					t.Errorf("status %d", w.Code)
				}
			}
		}()
	}
	wg.Wait()
	// Exactly the burst gets a real answer; the bucket does not refill
	// while the clock stands still.
	if got401.Load() != 5 || got429.Load() != attackers*25-5 {
		t.Fatalf("401: %d, 429: %d", got401.Load(), got429.Load())
	}
	if got := counter(fails, "staff", string(ReasonTooManyFailures)); got != float64(got429.Load()) {
		t.Fatalf("too_many_failures counted %v", got)
	}
	w := from("192.0.2.1", basicHeader("alice", "wonderland"))
	if w.Code != 429 || w.Header().Get("Retry-After") != "12" {
		t.Fatalf("right password while blocked: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	if w.Header().Get("WWW-Authenticate") != "" {
		t.Fatal("a 429 carries a challenge")
	}
	if up.calls != 0 {
		t.Fatalf("the upstream saw %d requests", up.calls)
	}
	// Another client is untouched.
	if w := from("198.51.100.7", basicHeader("alice", "wonderland")); w.Code != 204 {
		t.Fatalf("other client: %d", w.Code)
	}
	// Anonymous requests are not failures.
	if w := from("192.0.2.1", nil); w.Code != 401 {
		t.Fatalf("no credentials while blocked: %d", w.Code)
	}
	clock.Add(12 * time.Second)
	if w := from("192.0.2.1", basicHeader("alice", "wonderland")); w.Code != 204 {
		t.Fatalf("after Retry-After: %d", w.Code)
	}
	// One token came back: one more wrong guess is answered, the next blocks.
	if w := from("192.0.2.1", basicHeader("alice", "nope")); w.Code != 401 {
		t.Fatalf("first guess after recovery: %d", w.Code)
	}
	if w := from("192.0.2.1", basicHeader("alice", "nope")); w.Code != 429 {
		t.Fatalf("second guess after recovery: %d", w.Code)
	}
}

// blockingHash holds verifications until released, to count how many run
// at once.
type blockingHash struct {
	running, peak *atomic.Int64
	release       chan struct{}
}

func (b blockingHash) verify([]byte) bool {
	n := b.running.Add(1)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			break
		}
	}
	<-b.release
	b.running.Add(-1)
	return false
}

func TestBasicVerifiersBounded(t *testing.T) {
	f := parse(t, basicYAML(t, "\n      failure_limit: {limit: 1000}", htpasswdLine(t, "alice", "wonderland")), `{name: r, match: {path_prefix: /}, upstream: up, auth: staff}`)
	s := testSet(t, f, Options{Verifiers: 2})
	var running, peak atomic.Int64
	release := make(chan struct{})
	b := s.auths["staff"].(*basicAuth)
	b.users["alice"].hash = blockingHash{&running, &peak, release}
	h, _ := handler(t, s, f, 0)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(h, "/", basicHeader("alice", fmt.Sprint(i)))
		}()
	}
	// Two verifications start and hold their slots; the others wait.
	for running.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if peak.Load() != 2 {
		t.Fatalf("%d verifications ran at once, want 2", peak.Load())
	}
	// A client that gives up while queued is not verified at all.
	ctx, cancel := context.WithCancel(context.Background())
	b.verifying <- struct{}{}
	b.verifying <- struct{}{}
	done := make(chan int)
	go func() {
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
		r.Header = basicHeader("alice", "x")
		done <- recorder(h, r).Code
	}()
	cancel()
	if code := <-done; code != 401 {
		t.Fatalf("cancelled: %d", code)
	}
	<-b.verifying
	<-b.verifying
}

func TestHtpasswdRefused(t *testing.T) {
	apr1, err := exec.Command(needTool(t, "htpasswd", "apache2-utils"), "-nbm", "u", "pw").Output()
	if err != nil {
		t.Fatal(err)
	}
	sha, err := exec.Command(needTool(t, "htpasswd", "apache2-utils"), "-nbs", "u", "pw").Output()
	if err != nil {
		t.Fatal(err)
	}
	crypt6, err := exec.Command("openssl", "passwd", "-6", "pw").Output()
	if err != nil {
		t.Fatal(err)
	}
	big, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	heavy := strings.Replace(string(big), "$04$", "$17$", 1)
	good := htpasswdLine(t, "alice", "wonderland")
	argon := func(m, tt, p uint32, salt, key int) string {
		k := argon2.IDKey([]byte("pw"), make([]byte, max(salt, 1))[:salt], tt, m, uint8(p), uint32(key))
		return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, tt, p, base64.RawStdEncoding.EncodeToString(make([]byte, salt)), base64.RawStdEncoding.EncodeToString(k))
	}
	tests := []struct {
		name, line, want string
	}{
		{"apr1 from htpasswd -m", strings.TrimSpace(string(apr1)), `:3: user "u": MD5 ($apr1$) hashes are refused`},
		{"sha1 from htpasswd -s", strings.TrimSpace(string(sha)), `:3: user "u": SHA1 ({SHA}) hashes are refused`},
		{"sha512-crypt from openssl", "u:" + strings.TrimSpace(string(crypt6)), "SHA-crypt ($5$/$6$) hashes are refused"},
		{"md5-crypt", "u:$1$abcdefgh$0123456789abcdefghijkl", "MD5-crypt ($1$) hashes are refused"},
		{"des crypt", "u:abJnggxhB/yWI", "DES crypt hashes are refused"},
		{"plaintext", "u:hunter2hunter2", "plaintext passwords are refused"},
		{"argon2i", "u:$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "only the argon2id variant"},
		{"no colon", "alice", ":3: want user:hash"},
		{"empty hash", "alice:", ":3: want user:hash"},
		{"name with a space", "al ice:" + strings.TrimPrefix(good, "alice:"), `user name "al ice"`},
		{"duplicate", good + "\n" + good, `:4: user "alice" already defined on line 3`},
		{"bcrypt cost too high", "u:" + heavy, "bcrypt cost 17: at most 16"},
		{"bcrypt truncated", "u:" + string(big[:50]), "malformed bcrypt hash"},
		{"argon2id memory too high", "u:" + argon(1<<20, 1, 1, 16, 32), "argon2id memory 1048576 KiB: at most 262144"},
		{"argon2id short salt", "u:" + argon(64, 1, 1, 4, 32), "argon2id salt: want at least 8 bytes"},
		{"argon2id short key", "u:" + argon(64, 1, 1, 16, 8), "argon2id key: want 16 to 64 bytes"},
		{"argon2id bad version", "u:$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "malformed argon2id hash"},
		{"argon2id leading zero", "u:" + strings.Replace(argon(64, 1, 1, 16, 32), "t=1", "t=01", 1), "malformed argon2id hash"},
		{"only comments", "# nobody", "no users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "bad.htpasswd", []byte("# staff\n\n"+tt.line+"\n"))
			f := parse(t, "  staff:\n    basic:\n      htpasswd_file: "+path, `{name: r, match: {path_prefix: /}, upstream: up, auth: staff}`)
			_, err := NewSet(context.Background(), f, nil, Options{Logger: quiet})
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, "authenticators.staff.basic.htpasswd_file") {
				t.Fatalf("error %q does not contain %q", msg, tt.want)
			}
			// Never the hash, never a password-looking token of the line.
			if _, hash, ok := strings.Cut(tt.line, ":"); ok && len(hash) > 4 && strings.Contains(msg, hash) {
				t.Fatalf("the error shows the hash: %q", msg)
			}
		})
	}
	t.Run("every bad line at once", func(t *testing.T) {
		data := "a:plain\nb:{SHA}x\n" + good + "\nc:$apr1$x$y\n"
		path := writeFile(t, "bad.htpasswd", []byte(data))
		f := parse(t, "  staff:\n    basic:\n      htpasswd_file: "+path, `{name: r, match: {path_prefix: /}, upstream: up, auth: staff}`)
		_, err := NewSet(context.Background(), f, nil, Options{Logger: quiet})
		for _, want := range []string{path + ":1:", path + ":2:", path + ":4:"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v lacks %q", err, want)
			}
		}
	})
}

// An edited htpasswd file takes effect with the set built from it; the
// file is among the set's files, which the edge watches.
func TestBasicFileIsWatched(t *testing.T) {
	yaml := basicYAML(t, "", htpasswdLine(t, "alice", "wonderland"))
	f := parse(t, yaml, `{name: r, match: {path_prefix: /}, upstream: up, auth: staff}`)
	s := testSet(t, f, Options{})
	path := f.Authenticators["staff"].Basic.HtpasswdFile
	if files := s.Files(); len(files) != 1 || files[0] != path {
		t.Fatalf("files %q", files)
	}
	if err := os.WriteFile(path, []byte(htpasswdLine(t, "bob", "builder")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := testSet(t, f, Options{})
	h, _ := handler(t, s2, f, 0)
	if w := do(h, "/", basicHeader("alice", "wonderland")); w.Code != 401 {
		t.Fatalf("removed user: %d", w.Code)
	}
	if w := do(h, "/", basicHeader("bob", "builder")); w.Code != 204 {
		t.Fatalf("added user: %d", w.Code)
	}
}
