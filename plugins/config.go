package plugins

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/causewayhq/causeway/routes"
	"go.yaml.in/yaml/v3"
)

// ConfigError reports a problem at a nested key of a plugin's config, such
// as "rules[2].match", located at that value in the routes file (or at the
// deepest part of the path that exists). For a top-level key it is the same
// as cfg.ErrorAt.
func ConfigError(cfg routes.Raw, keyPath, format string, args ...any) *routes.Error {
	e := &routes.Error{File: cfg.File, Pos: routes.Pos{Line: 1, Col: 1}, Path: cfg.Path, Msg: fmt.Sprintf(format, args...)}
	if keyPath != "" {
		if e.Path != "" && !strings.HasPrefix(keyPath, "[") {
			e.Path += "."
		}
		e.Path += keyPath
	}
	n := cfg.Node
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil {
		return e
	}
	e.Pos = routes.Pos{Line: n.Line, Col: n.Column}
	for _, seg := range splitPath(keyPath) {
		next := child(n, seg)
		if next == nil {
			break
		}
		n = next
		e.Pos = routes.Pos{Line: n.Line, Col: n.Column}
	}
	return e
}

// splitPath turns "a.b[2].c" into ["a", "b", "[2]", "c"].
func splitPath(p string) []string {
	var out []string
	for part := range strings.SplitSeq(p, ".") {
		for part != "" {
			i := strings.IndexByte(part, '[')
			switch {
			case i < 0:
				out = append(out, part)
				part = ""
			case i > 0:
				out = append(out, part[:i])
				part = part[i:]
			default:
				j := strings.IndexByte(part, ']')
				if j < 0 {
					out = append(out, part)
					part = ""
					continue
				}
				out = append(out, part[:j+1])
				part = part[j+1:]
			}
		}
	}
	return out
}

func child(n *yaml.Node, seg string) *yaml.Node {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if strings.HasPrefix(seg, "[") {
		i, err := strconv.Atoi(strings.Trim(seg, "[]"))
		if err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
			return nil
		}
		return n.Content[i]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == seg {
			return n.Content[i+1]
		}
	}
	return nil
}
