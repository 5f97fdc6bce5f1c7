package pipeline

import (
	"path"
	"strings"
	"testing"
)

// FuzzCleanPathMatchesPathClean holds CleanPath, which skips path.Clean for
// paths that need nothing (the common case), against path.Clean applied
// always, with the trailing slash kept: the fast check must never let
// through a path that path.Clean would change, and the router, the auth
// stages and the upstream must all see the same path.
func FuzzCleanPathMatchesPathClean(f *testing.F) {
	for _, s := range []string{
		"", "/", "//", "/.", "/..", "/./", "/../", "a/b", "/a/b/", "/a//b", "/a/./b", "/a/../b",
		"/a/..", "/a/.", "/..a/.b/", "/a/...", "/a/b/../../..", "/%2e%2e/", "/a\\..\\b", "/.well-known/x",
		"/a/b/.", "/a/b/..", "///", "/a/\x00/..", "/.a", "/a./", "/a/..b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		want := path.Clean("/" + p)
		if strings.HasSuffix(p, "/") && want != "/" {
			want += "/"
		}
		if got := CleanPath(p); got != want {
			t.Fatalf("CleanPath(%q) = %q, path.Clean gives %q", p, got, want)
		}
	})
}
