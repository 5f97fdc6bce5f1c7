package caller

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	edgeID = "spiffe://example.org/ns/edge/sa/gateway"
	aID    = "spiffe://example.org/ns/shop/sa/orders"
	bID    = "spiffe://example.org/ns/shop/sa/billing"
	cID    = "spiffe://example.org/ns/shop/sa/ledger"
)

// svidOf is a workload's SVID held in memory: what a mesh.Source hands a
// Minter, without the files.
type svidOf struct{ svid atomic.Pointer[x509svid.SVID] }

func newSVID(t testing.TB, ca *meshtest.CA, id string, opts ...meshtest.Option) *svidOf {
	t.Helper()
	s := &svidOf{}
	s.set(t, ca, id, opts...)
	return s
}

func (s *svidOf) set(t testing.TB, ca *meshtest.CA, id string, opts ...meshtest.Option) {
	t.Helper()
	c := ca.Issue(id, opts...)
	chain := []*x509.Certificate{c.Leaf}
	for _, der := range c.TLS.Certificate[1:] {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	sid, err := mesh.IDFromCert(c.Leaf)
	if err != nil {
		sid = c.ID
	}
	s.svid.Store(&x509svid.SVID{ID: sid, Certificates: chain, PrivateKey: c.TLS.PrivateKey.(crypto.Signer)})
}

func (s *svidOf) GetX509SVID() (*x509svid.SVID, error) { return s.svid.Load(), nil }

type world struct {
	ca    *meshtest.CA
	edge  *svidOf
	a, b  *svidOf
	bundl *mesh.Source // the receivers' bundles, from real files
	now   time.Time
}

func newWorld(t testing.TB) *world {
	ca := meshtest.NewCA(t, "example.org")
	inter := ca.Intermediate()
	src, _ := ca.Source(cID)
	return &world{ca: ca, edge: newSVID(t, inter, edgeID), a: newSVID(t, ca, aID), b: newSVID(t, ca, bID), bundl: src, now: time.Now()}
}

func (w *world) clock() func() time.Time { return func() time.Time { return w.now } }

func (w *world) verifier(self string, o VerifyOptions) *Verifier {
	o.Self = func() mesh.ID { return mustID(self) }
	if o.Issuers == nil {
		o.Issuers = []mesh.ID{mustID(edgeID)}
	}
	if o.Now == nil {
		o.Now = w.clock()
	}
	return NewVerifier(w.bundl, o)
}

func mustID(s string) mesh.ID {
	id, err := mesh.ParseID(s)
	if err != nil {
		panic(err)
	}
	return id
}

var alice = Principal{Subject: "alice", Issuer: "https://idp.example.org", Authenticator: "users",
	Claims: map[string]any{"role": "admin", "tier": "gold"}, Headers: map[string]string{"X-User-Id": "alice"}, RequestID: "req-1"}

func TestMintVerify(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	m := NewMinter(w.edge, MintOptions{Now: w.clock()})
	tok, err := m.Mint(alice, mustID(aID))
	if err != nil {
		t.Fatal(err)
	}
	v, err := w.verifier(aID, VerifyOptions{}).Verify(tok, mustID(edgeID))
	if err != nil {
		t.Fatal(err)
	}
	p := v.Principal
	if p.Subject != "alice" || p.Issuer != alice.Issuer || p.Authenticator != "users" || p.Anonymous ||
		p.Headers["X-User-Id"] != "alice" || p.RequestID != "req-1" {
		t.Fatalf("principal = %+v", p)
	}
	if role, _ := p.Claim("role"); role != "admin" {
		t.Fatalf("role claim = %q", role)
	}
	if v.Signer.String() != edgeID || v.Hops() != 0 || v.Origin().String() != edgeID || v.Audience.String() != aID {
		t.Fatalf("signer %s hops %d origin %s aud %s", v.Signer, v.Hops(), v.Origin(), v.Audience)
	}
	if got := v.ExpiresAt.Sub(v.IssuedAt); got != DefaultLifetime {
		t.Fatalf("lifetime %s", got)
	}
}

// forge signs claims c with header extras using key, for the attacks
// below that the Minter would never produce.
func forge(t *testing.T, s *svidOf, method jwt.SigningMethod, key any, c jwt.Claims, hdr map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	sv, _ := s.GetX509SVID()
	var x5c []string
	for _, cert := range sv.Certificates {
		x5c = append(x5c, base64.StdEncoding.EncodeToString(cert.Raw))
	}
	tok.Header["x5c"] = x5c
	for k, v := range hdr {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	str, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

func baseClaims(w *world, iss, aud string) claims {
	return claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: iss, Subject: "mallory", Audience: jwt.ClaimStrings{aud},
		IssuedAt: jwt.NewNumericDate(w.now), ExpiresAt: jwt.NewNumericDate(w.now.Add(time.Minute)), ID: "j1",
	}}
}

// TestRefused: every forgery, misuse and replay gets its reason, and none
// passes.
func TestRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	edgeKey := w.edge.svid.Load().PrivateKey
	aKey := w.a.svid.Load().PrivateKey
	mint := func(s *svidOf, o MintOptions, p Principal, aud string) string {
		t.Helper()
		if o.Now == nil {
			o.Now = w.clock()
		}
		tok, err := NewMinter(s, o).Mint(p, mustID(aud))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mint(w.edge, MintOptions{}, alice, aID)
	otherCA := meshtest.NewCA(t, "example.org") // the same trust domain, a key the bundle does not have
	evilTD := meshtest.NewCA(t, "evil.org")
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(decodeSeg(t, parts[1]), `"alice"`, `"admin"`, 1))) + "." + parts[2]

	chainAEdgeB := func() string {
		tk := mint(w.edge, MintOptions{}, alice, aID)
		v, err := w.verifier(aID, VerifyOptions{}).Verify(tk, mesh.ID{})
		if err != nil {
			t.Fatal(err)
		}
		x, err := NewMinter(w.a, MintOptions{Now: w.clock()}).Exchange(v, mustID(bID))
		if err != nil {
			t.Fatal(err)
		}
		return x
	}()
	forgedAct := baseClaims(w, aID, bID)
	forgedAct.Act = &Actor{Subject: edgeID} // A claims the edge is the current actor
	huge := strings.Repeat("a", MaxTokenBytes+1)

	cases := []struct {
		name   string
		token  string
		self   string
		peer   string
		o      VerifyOptions
		reason string
	}{
		{"another CA of the same trust domain", mint(newSVID(t, otherCA, edgeID), MintOptions{}, alice, aID), aID, edgeID, VerifyOptions{}, ReasonUntrusted},
		{"another trust domain", mint(newSVID(t, evilTD, "spiffe://evil.org/edge"), MintOptions{}, alice, aID), aID, "", VerifyOptions{}, ReasonUntrusted},
		{"alg none", forge(t, w.edge, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, baseClaims(w, edgeID, aID), nil), aID, edgeID, VerifyOptions{}, ReasonSignature},
		{"HS256 keyed with the certificate", forge(t, w.edge, jwt.SigningMethodHS256, w.edge.svid.Load().Certificates[0].Raw, baseClaims(w, edgeID, aID), nil), aID, edgeID, VerifyOptions{}, ReasonSignature},
		{"payload changed after signing", tampered, aID, edgeID, VerifyOptions{}, ReasonSignature},
		{"signed by one key, chain of another", forge(t, w.edge, jwt.SigningMethodES256, aKey, baseClaims(w, edgeID, aID), nil), aID, edgeID, VerifyOptions{}, ReasonSignature},
		{"iss is not the signer", forge(t, w.a, jwt.SigningMethodES256, aKey, baseClaims(w, edgeID, bID), nil), bID, aID, VerifyOptions{}, ReasonSignature},
		{"act names someone else as the actor", forge(t, w.a, jwt.SigningMethodES256, aKey, forgedAct, nil), bID, aID, VerifyOptions{}, ReasonSignature},
		{"no x5c", forge(t, w.edge, jwt.SigningMethodES256, edgeKey, baseClaims(w, edgeID, aID), map[string]any{"x5c": nil}), aID, edgeID, VerifyOptions{}, ReasonMalformed},
		{"x5c garbage", forge(t, w.edge, jwt.SigningMethodES256, edgeKey, baseClaims(w, edgeID, aID), map[string]any{"x5c": []string{"!!"}}), aID, edgeID, VerifyOptions{}, ReasonMalformed},
		{"x5c too long", forge(t, w.edge, jwt.SigningMethodES256, edgeKey, baseClaims(w, edgeID, aID), map[string]any{"x5c": []string{"a", "b", "c", "d", "e", "f"}}), aID, edgeID, VerifyOptions{}, ReasonMalformed},
		{"crit header", forge(t, w.edge, jwt.SigningMethodES256, edgeKey, baseClaims(w, edgeID, aID), map[string]any{"crit": []string{"exp"}}), aID, edgeID, VerifyOptions{}, ReasonMalformed},
		{"oversized", huge, aID, edgeID, VerifyOptions{}, ReasonMalformed},
		{"not a JWT", "a.b", aID, edgeID, VerifyOptions{}, ReasonMalformed},
		{"expired", mint(w.edge, MintOptions{Now: func() time.Time { return w.now.Add(-2 * time.Minute) }}, alice, aID), aID, edgeID, VerifyOptions{}, ReasonExpired},
		{"issued in the future", mint(w.edge, MintOptions{Now: func() time.Time { return w.now.Add(time.Minute) }}, alice, aID), aID, edgeID, VerifyOptions{}, ReasonNotYetValid},
		{"lives too long", mint(w.edge, MintOptions{Lifetime: time.Hour}, alice, aID), aID, edgeID, VerifyOptions{}, ReasonLifetime},
		{"for another workload", good, bID, edgeID, VerifyOptions{}, ReasonAudience},
		{"presented by a workload that did not sign it", good, aID, bID, VerifyOptions{}, ReasonPeer},
		{"minted by a workload that is no issuer", mint(w.a, MintOptions{}, alice, bID), bID, aID, VerifyOptions{}, ReasonIssuer},
		{"more hops than allowed", chainAEdgeB, bID, aID, VerifyOptions{MaxHops: 0}, ReasonHops},
		{"no jti", forge(t, w.edge, jwt.SigningMethodES256, edgeKey, func() claims { c := baseClaims(w, edgeID, aID); c.ID = ""; return c }(), nil), aID, edgeID, VerifyOptions{}, ReasonMalformed},
		{"two audiences", forge(t, w.edge, jwt.SigningMethodES256, edgeKey, func() claims {
			c := baseClaims(w, edgeID, aID)
			c.Audience = append(c.Audience, bID)
			return c
		}(), nil), aID, edgeID, VerifyOptions{}, ReasonAudience},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var peer mesh.ID
			if tc.peer != "" {
				peer = mustID(tc.peer)
			}
			v, err := w.verifier(tc.self, tc.o).Verify(tc.token, peer)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Verify = %+v, %v; want a refusal (%s)", v, err, tc.reason)
			}
			if ce.Reason != tc.reason {
				t.Fatalf("reason %q (%v), want %q", ce.Reason, err, tc.reason)
			}
		})
	}
	t.Run("the same chain passes within max_hops", func(t *testing.T) {
		v, err := w.verifier(bID, VerifyOptions{MaxHops: 1}).Verify(chainAEdgeB, mustID(aID))
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(v.Chain); got != fmt.Sprint([]mesh.ID{mustID(edgeID), mustID(aID)}) {
			t.Fatalf("chain %s", got)
		}
	})
}

func decodeSeg(t *testing.T, s string) string {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReplay(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	m := NewMinter(w.edge, MintOptions{Now: w.clock()})
	v := w.verifier(aID, VerifyOptions{Replay: true})
	tok, _ := m.Mint(alice, mustID(aID))
	if _, err := v.Verify(tok, mustID(edgeID)); err != nil {
		t.Fatal(err)
	}
	var ce *Error
	if _, err := v.Verify(tok, mustID(edgeID)); !errors.As(err, &ce) || ce.Reason != ReasonReplay {
		t.Fatalf("second use: %v", err)
	}
	// A Verifier built later on the same memory (a reload's) refuses it
	// too; one with a memory of its own would not.
	shared := NewReplayCache()
	first := w.verifier(aID, VerifyOptions{Replay: true, ReplayCache: shared})
	tok3, _ := m.Mint(alice, mustID(aID))
	if _, err := first.Verify(tok3, mustID(edgeID)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.verifier(aID, VerifyOptions{Replay: true, ReplayCache: shared}).Verify(tok3, mustID(edgeID)); !errors.As(err, &ce) || ce.Reason != ReasonReplay {
		t.Fatalf("use on a later verifier sharing the memory: %v", err)
	}
	// A fresh token for the same principal is not a replay.
	tok2, _ := m.Mint(alice, mustID(aID))
	if _, err := v.Verify(tok2, mustID(edgeID)); err != nil {
		t.Fatal(err)
	}
	// Without the replay check the same token verifies again (from cache).
	v2 := w.verifier(aID, VerifyOptions{})
	for range 3 {
		if _, err := v2.Verify(tok, mustID(edgeID)); err != nil {
			t.Fatal(err)
		}
	}
	// The cached result still expires.
	w.now = w.now.Add(DefaultLifetime + DefaultSkew)
	if _, err := v2.Verify(tok, mustID(edgeID)); !errors.As(err, &ce) || ce.Reason != ReasonExpired {
		t.Fatalf("after expiry: %v", err)
	}
}

func TestReplayCacheWindows(t *testing.T) {
	t.Parallel()
	c := NewReplayCache()
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at    time.Duration
		id    string
		first bool
	}{
		{0, "a", true},
		{30 * time.Second, "a", false},
		{61 * time.Second, "a", false}, // rotated: a is in prev
		{61 * time.Second, "b", true},
		{125 * time.Second, "b", false}, // b is in prev after the next rotation
		{125 * time.Second, "a", true},  // a has aged out (between one and two windows)
		{400 * time.Second, "b", true},  // a long gap clears both
	}
	for i, s := range steps {
		if got := c.first(s.id, t0.Add(s.at), time.Minute); got != s.first {
			t.Fatalf("step %d (%s at %s): first = %v", i, s.id, s.at, got)
		}
	}
}

func TestExchange(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	edge := NewMinter(w.edge, MintOptions{Now: w.clock()})
	tok, _ := edge.Mint(alice, mustID(aID))
	// A's sidecar: the token its service passed on, checked without a peer.
	inA, err := w.verifier(aID, VerifyOptions{}).Verify(tok, mesh.ID{})
	if err != nil {
		t.Fatal(err)
	}
	w.now = w.now.Add(50 * time.Second)
	toB, err := NewMinter(w.a, MintOptions{Now: w.clock()}).Exchange(inA, mustID(bID))
	if err != nil {
		t.Fatal(err)
	}
	inB, err := w.verifier(bID, VerifyOptions{MaxHops: 3}).Verify(toB, mustID(aID))
	if err != nil {
		t.Fatal(err)
	}
	if inB.Principal.Subject != "alice" || inB.Signer.String() != aID || inB.Hops() != 1 || inB.Origin().String() != edgeID {
		t.Fatalf("at B: %+v", inB)
	}
	if !inB.ExpiresAt.Equal(inA.ExpiresAt) {
		t.Fatalf("exchanged token lives to %s, beyond the original's %s", inB.ExpiresAt, inA.ExpiresAt)
	}
	// B passes it on to C: the chain grows in order.
	toC, err := NewMinter(w.b, MintOptions{Now: w.clock()}).Exchange(inB, mustID(cID))
	if err != nil {
		t.Fatal(err)
	}
	inC, err := w.verifier(cID, VerifyOptions{MaxHops: 3}).Verify(toC, mustID(bID))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(inC.Chain), fmt.Sprint([]mesh.ID{mustID(edgeID), mustID(aID), mustID(bID)}); got != want {
		t.Fatalf("chain %s, want %s", got, want)
	}
	// A token captured at B cannot be used against C, even by B.
	var ce *Error
	if _, err := w.verifier(cID, VerifyOptions{MaxHops: 3}).Verify(toB, mustID(aID)); !errors.As(err, &ce) || ce.Reason != ReasonAudience {
		t.Fatalf("B's token at C: %v", err)
	}
	// Once the original has expired there is nothing left to hand on.
	w.now = inA.ExpiresAt.Add(time.Second)
	if _, err := NewMinter(w.a, MintOptions{Now: w.clock()}).Exchange(inA, mustID(bID)); err == nil {
		t.Fatal("exchanged an expired token")
	}
}

func TestMintCache(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	m := NewMinter(w.edge, MintOptions{Now: w.clock(), CacheFor: 30 * time.Second})
	t1, _ := m.Mint(alice, mustID(aID))
	t2, _ := m.Mint(alice, mustID(aID))
	if t1 != t2 {
		t.Fatal("the same principal and audience minted twice within the cache time")
	}
	v, err := w.verifier(aID, VerifyOptions{}).Verify(t1, mustID(edgeID))
	if err != nil {
		t.Fatal(err)
	}
	if v.Principal.RequestID != "" {
		t.Fatalf("a shared token names request %q", v.Principal.RequestID)
	}
	if t3, _ := m.Mint(alice, mustID(bID)); t3 == t1 {
		t.Fatal("another audience got the same token")
	}
	bob := alice
	bob.Subject = "bob"
	if t4, _ := m.Mint(bob, mustID(aID)); t4 == t1 {
		t.Fatal("another principal got the same token")
	}
	w.now = w.now.Add(31 * time.Second)
	if t5, _ := m.Mint(alice, mustID(aID)); t5 == t1 {
		t.Fatal("reused past the cache time")
	}
	// A rotated identity signs anew at once.
	t6, _ := m.Mint(alice, mustID(aID))
	w.edge.set(t, w.ca, edgeID)
	t7, _ := m.Mint(alice, mustID(aID))
	if t6 == t7 {
		t.Fatal("a token signed with the old key was reused after rotation")
	}
	if _, err := w.verifier(aID, VerifyOptions{}).Verify(t7, mustID(edgeID)); err != nil {
		t.Fatal(err)
	}
}

// TestMintCappedByCertificate: a token never outlives the SVID that
// vouches for it.
func TestMintCappedByCertificate(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	short := newSVID(t, w.ca, edgeID, meshtest.TTL(20*time.Second))
	tok, err := NewMinter(short, MintOptions{Now: w.clock()}).Mint(alice, mustID(aID))
	if err != nil {
		t.Fatal(err)
	}
	v, err := w.verifier(aID, VerifyOptions{}).Verify(tok, mustID(edgeID))
	if err != nil {
		t.Fatal(err)
	}
	if na := short.svid.Load().Certificates[0].NotAfter; v.ExpiresAt.After(na) {
		t.Fatalf("token expires %s, certificate %s", v.ExpiresAt, na)
	}
}

// TestConcurrent: minters and verifiers shared by many goroutines, with the
// caches on, give every goroutine the principal it asked for.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.now = time.Now()
	m := NewMinter(w.edge, MintOptions{CacheFor: 10 * time.Second})
	v := w.verifier(aID, VerifyOptions{Now: time.Now})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 250 {
				p := alice
				p.Subject = fmt.Sprintf("user-%d", (g*250+i)%37)
				tok, err := m.Mint(p, mustID(aID))
				if err != nil {
					errs <- err
					return
				}
				got, err := v.Verify(tok, mustID(edgeID))
				if err != nil {
					errs <- err
					return
				}
				if got.Principal.Subject != p.Subject {
					errs <- fmt.Errorf("asked for %s, verified %s", p.Subject, got.Principal.Subject)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func FuzzVerify(f *testing.F) {
	w := newWorld(f)
	tok, err := NewMinter(w.edge, MintOptions{Now: w.clock()}).Mint(alice, mustID(aID))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("")
	f.Add("e30.e30.")
	f.Add(`eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.`)
	v := w.verifier(aID, VerifyOptions{})
	f.Fuzz(func(t *testing.T, s string) {
		got, err := v.Verify(s, mustID(edgeID))
		if err == nil && s != tok {
			t.Fatalf("a token other than the minted one verified: %q -> %+v", s, got)
		}
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("refusal without a reason: %v", err)
			}
		}
	})
}

// TestCachedTokenOutlivesNoCertificate: a token whose exp lies beyond its
// signing certificate's NotAfter (a signer that does not cap it, as Mint
// does) is refused once the certificate has expired, whether or not the
// verifier has seen the token before. A first verification then fails on
// the chain; the cached one must not keep accepting it until its exp.
func TestCachedTokenOutlivesNoCertificate(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	short := newSVID(t, w.ca, edgeID, meshtest.TTL(30*time.Second))
	notAfter := short.svid.Load().Certificates[0].NotAfter
	tok := forge(t, short, jwt.SigningMethodES256, short.svid.Load().PrivateKey, baseClaims(w, edgeID, aID), nil)
	v := w.verifier(aID, VerifyOptions{})
	tests := []struct {
		desc   string
		at     time.Time
		reason string // "" accepted
	}{
		{"while the certificate is valid", w.now, ""},
		{"seen before, after the certificate expired (not the token)", notAfter.Add(time.Second), ReasonExpired},
	}
	for _, tc := range tests {
		w.now = tc.at // in order: the clock only moves on
		_, err := v.Verify(tok, mustID(edgeID))
		var ce *Error
		switch {
		case tc.reason == "" && err != nil:
			t.Fatalf("%s: %v", tc.desc, err)
		case tc.reason != "" && (!errors.As(err, &ce) || ce.Reason != tc.reason):
			t.Fatalf("%s: Verify = %v, want refused (%s)", tc.desc, err, tc.reason)
		}
	}
}
