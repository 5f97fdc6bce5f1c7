package routes

import (
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The regular expressions nameRe and hostRe stand for, as they were
// written before they became hand-written scans.
var (
	nameRegexp = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	hostRegexp = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
)

func samePatterns(t *testing.T, s string) {
	t.Helper()
	if got, want := nameRe.MatchString(s), nameRegexp.MatchString(s); got != want {
		t.Fatalf("name %q: %t, the regexp says %t", s, got, want)
	}
	if got, want := hostRe.MatchString(s), hostRegexp.MatchString(s); got != want {
		t.Fatalf("host %q: %t, the regexp says %t", s, got, want)
	}
}

// TestPatternsMatchTheirRegexps checks the hand-written name and host
// scans against the regular expressions they replace: at every edge of
// length and alphabet, and on a million strings drawn from the bytes that
// matter.
func TestPatternsMatchTheirRegexps(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, s := range []string{
		"", "a", "-", ".", "_", "*", "*.", "*.a", "**.a", "a.*", "A", "a-", "-a", "a-b", "a--b", "a.b", "a..b", ".a", "a.",
		"a_b", "é", "aé", "k8s.apps.r1.0.e", "h1.example", "*.b.example", "xn--bcher-kva.example", "a\x00", "a\n", "\xff",
		long(63), long(64), long(127), long(128), long(129), long(63) + "." + long(63), long(64) + ".a", "*." + long(63),
		"0", "0.0.0.0", "a:80", "A.example",
	} {
		samePatterns(t, s)
	}
	alphabet := []byte("aZ09-._*.:\x00\xc3\xa9/")
	r := rand.New(rand.NewPCG(1, 2))
	n := 1_000_000
	if testing.Short() {
		n = 50_000
	}
	var b []byte
	for range n {
		b = b[:0]
		size := r.IntN(12)
		if r.IntN(50) == 0 {
			size = 60 + r.IntN(75) // around the label and name limits
		}
		for range size {
			b = append(b, alphabet[r.IntN(len(alphabet))])
		}
		samePatterns(t, string(b))
	}
}

func FuzzPatterns(f *testing.F) {
	for _, s := range []string{"a", "*.a.b", "a-b.c", strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(samePatterns)
}

// The signature of a match is the text it was when fmt wrote it: two
// routes' signatures are compared, never parsed, but Merge and the
// validation must agree, and a change of text would be a change of which
// routes count as the same.
func TestSignatureText(t *testing.T) {
	tests := []struct {
		m    Match
		want string
	}{
		{Match{}, "h=|p=|pp=|re=|m=|tls=false"},
		{Match{Host: "a.example", PathPrefix: "/x/", Methods: []string{"POST", "GET"}, TLS: true}, "h=a.example|p=|pp=/x/|re=|m=GET,POST|tls=true"},
		{Match{Path: "/a", PathRegex: "^/b$", Methods: []string{"GET"}, Headers: map[string]string{"X-A": "1"}, Query: map[string]string{"q": "2"}},
			"h=|p=/a|pp=|re=^/b$|m=GET|tls=false|H:x-a=1|Q:q=2"},
	}
	for _, tc := range tests {
		if got := tc.m.signature(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.m, got, tc.want)
		}
	}
	// Sorting the methods must not reorder the route's own list.
	m := Match{Methods: []string{"POST", "GET"}}
	m.signature()
	if m.Methods[0] != "POST" {
		t.Fatalf("signature sorted the route's methods: %v", m.Methods)
	}
}

// Two matches that differ have different signatures, whatever text their
// values hold: a value that spells another piece of a signature once made
// Merge leave a route out as the duplicate of one matching other requests.
func TestSignatureTellsValuesApart(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b Match
	}{
		{"a header value spelling a second header", Match{Headers: map[string]string{"a": "1|H:b=2"}}, Match{Headers: map[string]string{"a": "1", "b": "2"}}},
		{"a header value spelling a query parameter", Match{Headers: map[string]string{"a": "1|Q:b=2"}}, Match{Headers: map[string]string{"a": "1"}, Query: map[string]string{"b": "2"}}},
		{"a query value spelling a second parameter", Match{Query: map[string]string{"a": "1|Q:b=2"}}, Match{Query: map[string]string{"a": "1", "b": "2"}}},
		{"a query name holding '='", Match{Query: map[string]string{"a=b": "c"}}, Match{Query: map[string]string{"a": "b=c"}}},
		{"a regular expression spelling a header", Match{PathRegex: "/x|m=|tls=false|H:a=1"}, Match{PathRegex: "/x", Headers: map[string]string{"a": "1"}}},
		{"a quoted value and its text", Match{Headers: map[string]string{"a": `"1|"`}}, Match{Headers: map[string]string{"a": "1|"}}},
	} {
		if tc.a.signature() == tc.b.signature() {
			t.Errorf("%s: one signature %q for both", tc.name, tc.a.signature())
		}
	}
}

// BenchmarkMergeOIDC20k is the validation of 20,000 provider routes, the
// second half of which sign in through one oidc authenticator, as a
// policy on the second of two Gateways makes them (go test -run '^$'
// -bench MergeOIDC20k ./routes).
func BenchmarkMergeOIDC20k(b *testing.B) {
	f, err := Parse("t.yaml", []byte(strings.Replace(oidcRoutes("    match: {path_prefix: /}\n"), "    auth: sso\n", "", 1)))
	if err != nil {
		b.Fatal(err)
	}
	frag := Fragment{Upstreams: map[string]Upstream{"k8s.up": {Endpoints: []string{"127.0.0.1:7002"}}}}
	for i := range 20000 {
		r := Route{Name: "k8s.r" + strconv.Itoa(i), Upstream: "k8s.up",
			Match: Match{Host: "h" + strconv.Itoa(i%100) + ".example", PathPrefix: "/p" + strconv.Itoa(i) + "/"}}
		if i >= 10000 {
			r.Auth = StringList{"sso"}
			if i == 10000 {
				r.Match.PathPrefix = "/" // its callback and logout path
			}
		}
		frag.Routes = append(frag.Routes, r)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Merge(frag); err != nil {
			b.Fatal(err)
		}
	}
}
