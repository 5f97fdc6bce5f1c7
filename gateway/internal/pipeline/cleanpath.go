package pipeline

import (
	"path"
	"strings"
)

// CleanPath resolves "." and ".." segments and repeated slashes, keeping a
// trailing slash, so "/public/../admin" cannot reach a route by a side door:
// the path that is matched, authorised and forwarded is the same.
func CleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	if !needsClean(p) {
		return p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

func needsClean(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i+1 < len(p) {
			switch p[i+1] {
			case '/':
				return true
			case '.':
				rest := p[i+1:]
				if rest == "." || rest == ".." || strings.HasPrefix(rest, "./") || strings.HasPrefix(rest, "../") {
					return true
				}
			}
		}
	}
	return false
}
