package h1server

import (
	"net/url"
	"reflect"
	"testing"
)

// parsePlainTarget, where it takes a target, reads it exactly as
// url.ParseRequestURI does; it leaves the others to it.
func TestParsePlainTarget(t *testing.T) {
	t.Parallel()
	targets := []string{
		"/", "/a", "/a/b/c", "/a?", "/a??", "/a?b=c&d=e", "/a?b=%zz", "/a?b c", "/a?\x01",
		"/a%20b", "/a%2Fb", "/a b", "/a!b", "/a'b", "/a(b)", "/a*b", "/a[b]", "/a#b", "/a\"b",
		"/a;b=c,d", "/a:b@c", "/~user/$x&y+z", "//a/b", "///a", "*", "a/b", "http://h/a",
		"/a\x7f", "/a?\x7f", "/é", "/a?é", "/.", "/..", "/./a/../b", "/a%", "/a%2",
	}
	for c := range 256 {
		targets = append(targets, "/x"+string(rune(c)), "/x"+string([]byte{byte(c)}), "/x?"+string([]byte{byte(c)}))
	}
	for _, target := range targets {
		var got url.URL
		if !parsePlainTarget(&got, target) {
			continue
		}
		want, err := url.ParseRequestURI(target)
		if err != nil {
			t.Errorf("%q: taken, but url.ParseRequestURI refuses it: %v", target, err)
			continue
		}
		if !reflect.DeepEqual(&got, want) {
			t.Errorf("%q: %#v, url.ParseRequestURI %#v", target, got, *want)
		}
	}
	// The common forms are taken (else the fast path would be dead).
	for _, target := range []string{"/", "/bench", "/api/v1/items/42?x=1&y=2", "/a?"} {
		var u url.URL
		if !parsePlainTarget(&u, target) {
			t.Errorf("%q is left to url.ParseRequestURI", target)
		}
	}
}
