package routes

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// LookupEnv finds an environment variable, as os.LookupEnv does. It is passed
// in rather than read from the process so that a test, or a validator
// checking a file for another machine, says exactly which environment applies.
type LookupEnv func(name string) (string, bool)

// MapEnv is a LookupEnv over a fixed set of variables.
func MapEnv(vars map[string]string) LookupEnv {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// ExpandEnv replaces environment references in s:
//
//	${NAME}           the variable's value; an error when it is not set
//	${NAME:-default}  the value, or default when the variable is unset or empty
//	$$                a literal $
//
// NAME is a letter or '_' followed by letters, digits and '_'. The default is
// taken literally up to the closing brace (no nested references). Any other
// '$' is kept as it is, so that regular expressions (`^/v1$`) and rewrite
// templates (`/$1`) need no escaping; an unterminated or malformed "${" is
// an error. The expansion is one pass: a value that itself contains "${"
// is not expanded again.
func ExpandEnv(s string, lookup LookupEnv) (string, error) {
	return expandEnv(s, lookup, nil)
}

// expandEnv is ExpandEnv; each variable's value put in is also added to
// *put when put is not nil.
func expandEnv(s string, lookup LookupEnv, put *[]string) (string, error) {
	i := strings.IndexByte(s, '$')
	if i < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i >= 0 {
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$$"):
			b.WriteByte('$')
			s = s[2:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated environment reference %q: close it with '}' (write $$ for a literal $)", truncate(s, 40))
			}
			v, err := expandRef(s[2:end], lookup)
			if err != nil {
				return "", err
			}
			if put != nil && v != "" {
				*put = append(*put, v)
			}
			b.WriteString(v)
			s = s[end+1:]
		default:
			b.WriteByte('$')
			s = s[1:]
		}
		i = strings.IndexByte(s, '$')
	}
	b.WriteString(s)
	return b.String(), nil
}

// expandRef expands the inside of one "${...}".
func expandRef(ref string, lookup LookupEnv) (string, error) {
	name, def, hasDef := strings.Cut(ref, ":-")
	if !validEnvName(name) {
		return "", fmt.Errorf("invalid environment reference ${%s}: use ${NAME} or ${NAME:-default}, NAME made of letters, digits and _ (write $$ for a literal $)", truncate(ref, 40))
	}
	var v string
	var ok bool
	if lookup != nil {
		v, ok = lookup(name)
	}
	if hasDef {
		if !ok || v == "" {
			return def, nil
		}
		return v, nil
	}
	if !ok {
		return "", fmt.Errorf("environment variable %s is not set (give a default with ${%s:-default}, or write $${%s} for a literal ${%s})", name, name, name, name)
	}
	return v, nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// expandScalar returns n with environment references in its value expanded,
// or n itself when it holds none. n is never changed: an aliased node is
// shared, and the parsed tree stays what the file says. The copy is
// remembered, so that it is never expanded twice ($$ must stay a $) and so
// that a number, boolean or duration field accepts it even when it was
// quoted to protect the braces in a flow mapping ({limit: "${LIMIT}"}).
// The value is always one scalar: it cannot add a mapping, a list, an alias
// or a tag, and a string field keeps it as a string whatever it looks like.
func (d *decoder) expandScalar(n *yaml.Node, path string) (*yaml.Node, bool) {
	if d.env == nil || n.Kind != yaml.ScalarNode || n.Tag != "!!str" || !strings.Contains(n.Value, "$") || d.expanded[n] {
		return n, true
	}
	var put []string
	v, err := expandEnv(n.Value, d.env, &put)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return n, false
	}
	if v == n.Value {
		return n, true
	}
	d.envVals.add(path, v, put)
	cp := *n
	cp.Value = v
	if d.expanded == nil {
		d.expanded = map[*yaml.Node]bool{}
	}
	d.expanded[&cp] = true
	return &cp, true
}

// scalarTag is n's tag, except that an expanded value counts as what its
// text would be if written plainly in the file (see plainTag): what a number
// or boolean field checks.
func (d *decoder) scalarTag(n *yaml.Node) string {
	if d.expanded[n] {
		return plainTag(n.Value)
	}
	return n.Tag
}

// plainTag is the tag YAML gives v written as a plain scalar, or !!str when
// v would not be one plain scalar with exactly that text.
func plainTag(v string) string {
	var doc yaml.Node
	if yaml.Unmarshal([]byte(v), &doc) != nil || len(doc.Content) != 1 {
		return "!!str"
	}
	n := doc.Content[0]
	if n.Kind != yaml.ScalarNode || n.Style != 0 || n.Value != v || n.Anchor != "" {
		return "!!str"
	}
	switch n.Tag {
	case "!!int", "!!float", "!!bool":
		return n.Tag
	}
	return "!!str"
}

// expandTree is expandScalar for a whole subtree kept raw (a plugin's
// config), so its references are expanded, and refused, with the rest of
// the file. It returns n itself when nothing changed, else a copy; mapping
// keys are left alone. Each node is visited once, aliases included (an alias
// in the copy points to its anchor's copy), so an alias bomb costs no more
// here than its size in the file; decoding the Raw still counts its
// expansion against maxNodes.
func (d *decoder) expandTree(n *yaml.Node, path string) *yaml.Node {
	if d.env == nil {
		return n
	}
	seen := map[*yaml.Node]*yaml.Node{}
	return d.copyExpanded(n, path, seen)
}

// copyExpanded returns n, or its copy with references expanded; seen maps
// every node already visited to its result.
func (d *decoder) copyExpanded(n *yaml.Node, path string, seen map[*yaml.Node]*yaml.Node) *yaml.Node {
	if r, ok := seen[n]; ok {
		return r
	}
	seen[n] = n // a cycle (not valid YAML) ends here
	r := n
	switch n.Kind {
	case yaml.ScalarNode:
		r, _ = d.expandScalar(n, path)
	case yaml.AliasNode:
		if n.Alias != nil {
			if t := d.copyExpanded(n.Alias, path, seen); t != n.Alias {
				cp := *n
				cp.Alias = t
				r = &cp
			}
		}
	case yaml.MappingNode, yaml.SequenceNode:
		var content []*yaml.Node
		for i, c := range n.Content {
			e := c
			switch {
			case n.Kind == yaml.MappingNode && i%2 == 0: // a key
			case n.Kind == yaml.MappingNode:
				e = d.copyExpanded(c, join(path, n.Content[i-1].Value), seen)
			default:
				e = d.copyExpanded(c, fmt.Sprintf("%s[%d]", path, i), seen)
			}
			if e != c && content == nil {
				content = append(make([]*yaml.Node, 0, len(n.Content)), n.Content[:i]...)
			}
			if content != nil {
				content = append(content, e)
			}
		}
		if content != nil {
			cp := *n
			cp.Content = content
			r = &cp
		}
	}
	seen[n] = r
	return r
}
