package routes

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a configuration file, located by file, line,
// column and key path.
type Error struct {
	File string
	Pos  Pos
	Path string
	Msg  string
}

func (e *Error) Error() string {
	file := e.File
	if file == "" {
		file = "<input>"
	}
	// A message may quote the value at fault, which a plugin's config
	// (whose shape Causeway does not know) can hold a credential in: the
	// error goes to the log, /config's last_reload and `causeway
	// validate`, so what it quotes is masked as /config masks values.
	msg := RedactText(e.Msg)
	if e.Path == "" {
		return fmt.Sprintf("%s:%d:%d: %s", file, e.Pos.Line, e.Pos.Col, msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", file, e.Pos.Line, e.Pos.Col, e.Path, msg)
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es Errors) sort() {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Pos.Line != es[j].Pos.Line {
			return es[i].Pos.Line < es[j].Pos.Line
		}
		return es[i].Pos.Col < es[j].Pos.Col
	})
}

// decoder turns a yaml.Node tree into Go values strictly: unknown keys,
// duplicate keys and values of the wrong kind are errors. It keeps going after
// an error so that one load reports every problem, and records where each
// key path stands so later validation can name a line and column.
type decoder struct {
	file string
	errs Errors
	pos  map[string]Pos
	// nodes counts values visited. YAML aliases let a small file expand
	// exponentially ("billion laughs"); past maxNodes decoding stops.
	nodes    int
	tooLarge bool
	// env expands ${VAR} references in string values; nil expands none
	// (a Raw decoded later was already expanded with its file). expanded
	// holds the nodes that are results of an expansion.
	env      LookupEnv
	expanded map[*yaml.Node]bool
	// envVals holds the values that came from ${VAR} references, so that
	// errors found after decoding (validation, building) can mask them.
	// Shared with the Raws decoded, whose owners report errors later.
	envVals *envValues
	// doubt holds the key paths whose values did not decode, and the keys
	// an unknown key was probably meant to be: validation goes on over
	// the rest, but what it says about these would only be a consequence.
	doubt doubts
}

const maxNodes = 200_000

func newDecoder(file string) *decoder {
	return &decoder{file: file, pos: make(map[string]Pos), doubt: doubts{}, envVals: &envValues{}}
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Pos: nodePos(n), Path: path, Msg: fmt.Sprintf(format, args...)})
	d.doubt[path] = true
}

// doubts is a set of key paths whose decoded values cannot be trusted.
type doubts map[string]bool

// covers reports whether a validation error at path may only be a
// consequence of a decode error: it is about a doubtful value, about
// something inside one, or about a section that holds one (a value left
// out because it did not decode makes its section look incomplete).
func (ds doubts) covers(path string) bool {
	for d := range ds {
		if d == path || under(path, d) || under(d, path) {
			return true
		}
	}
	return false
}

// under reports whether path p lies inside path parent ("" is the root).
func under(p, parent string) bool {
	if parent == "" {
		return p != ""
	}
	return len(p) > len(parent) && strings.HasPrefix(p, parent) && (p[len(parent)] == '.' || p[len(parent)] == '[')
}

// filter drops the errors doubts covers.
func (ds doubts) filter(errs Errors) Errors {
	if len(ds) == 0 {
		return errs
	}
	kept := errs[:0:0]
	for _, e := range errs {
		if !ds.covers(e.Path) {
			kept = append(kept, e)
		}
	}
	return kept
}

func nodePos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{Line: 1, Col: 1}
	}
	return Pos{Line: n.Line, Col: n.Column}
}

var (
	durationType   = reflect.TypeFor[Duration]()
	stringListType = reflect.TypeFor[StringList]()
	rawType        = reflect.TypeFor[Raw]()
)

// count counts one value visited; false once the file is too large.
func (d *decoder) count(n *yaml.Node, path string) bool {
	d.nodes++
	if d.nodes > maxNodes {
		if !d.tooLarge {
			d.tooLarge = true
			d.errorf(n, path, "the file expands to more than %d values (aliases?): refusing it", maxNodes)
		}
		return false
	}
	return true
}

func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	if !d.count(n, path) {
		return
	}
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	var ok bool
	if n, ok = d.expandScalar(n, path); !ok {
		return
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return
		}
		d.decode(n.Content[0], path, v)
		return
	}
	d.pos[path] = nodePos(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an explicit null leaves the zero value
	}

	switch v.Type() {
	case durationType:
		d.decodeDuration(n, path, v)
		return
	case stringListType:
		d.decodeStringList(n, path, v)
		return
	case rawType:
		v.Set(reflect.ValueOf(Raw{Node: d.expandTree(n, path), File: d.file, Path: path, expanded: d.expanded, env: d.envVals}))
		return
	}

	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, path, v.Elem())
	case reflect.Struct:
		d.decodeStruct(n, path, v)
	case reflect.Map:
		d.decodeMap(n, path, v)
	case reflect.Slice:
		d.decodeSlice(n, path, v)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float") {
			d.errorf(n, path, "expected a string, found %s", d.describe(n, path))
			return
		}
		v.SetString(n.Value)
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || d.scalarTag(n) != "!!int" {
			d.errorf(n, path, "expected an integer, found %s", d.describe(n, path))
			return
		}
		i, err := strconv.ParseInt(n.Value, 0, 64)
		if err != nil {
			d.errorf(n, path, "expected an integer, found %s", d.quoted(n, path))
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		if tag := d.scalarTag(n); n.Kind != yaml.ScalarNode || (tag != "!!int" && tag != "!!float") {
			d.errorf(n, path, "expected a number, found %s", d.describe(n, path))
			return
		}
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil {
			d.errorf(n, path, "expected a number, found %s", d.quoted(n, path))
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || d.scalarTag(n) != "!!bool" {
			d.errorf(n, path, "expected true or false, found %s", d.describe(n, path))
			return
		}
		v.SetBool(n.Value == "true" || n.Value == "True" || n.Value == "TRUE")
	default:
		panic(fmt.Sprintf("routes: decoder cannot handle %s", v.Type()))
	}
}

// describe says what n is, for a decode error at path. The value itself is
// quoted only where it cannot be a credential: not under a key whose name
// says it holds one (api_keys, client_secret, Authorization, as /config
// masks them), and not when it came from an environment reference, where
// secrets are kept so that the file need not hold them. An error goes to
// the log, /config's last_reload and `causeway validate`.
func (d *decoder) describe(n *yaml.Node, path string) string {
	if n.Kind == yaml.ScalarNode && d.secretAt(n, path) {
		switch n.Tag {
		case "!!int", "!!float":
			return "a number (" + Redacted + ")"
		case "!!bool":
			return "a boolean (" + Redacted + ")"
		}
		return "a string (" + Redacted + ")"
	}
	return describe(n)
}

// quoted is n's value quoted for an error message at path, or Redacted
// where describe would not show it.
func (d *decoder) quoted(n *yaml.Node, path string) string {
	if d.secretAt(n, path) {
		return Redacted
	}
	return strconv.Quote(n.Value)
}

// secretAt reports whether the value n at path may be a credential: the
// key it is under (an item of a list counts as under the list's key) names
// one, or the value was read from the environment. Only that key: the
// sections above it name kinds (jwt, api_key, session), not credentials.
func (d *decoder) secretAt(n *yaml.Node, path string) bool {
	if d.expanded[n] {
		return true
	}
	key := path
	for strings.HasSuffix(key, "]") {
		i := strings.LastIndexByte(key, '[')
		if i < 0 {
			break
		}
		key = key[:i]
	}
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		key = key[i+1:]
	}
	return SecretName(key)
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!bool":
			return "a boolean " + n.Value
		case "!!int", "!!float":
			return "the number " + n.Value
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unexpected value"
}

func (d *decoder) decodeDuration(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a duration such as \"250ms\" or \"1m\", found %s", d.describe(n, path))
		return
	}
	if n.Tag == "!!int" && n.Value == "0" {
		v.SetInt(0)
		return
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		d.errorf(n, path, "invalid duration %s: use a Go duration such as \"250ms\" or \"1m\"", d.quoted(n, path))
		return
	}
	if dur < 0 {
		d.errorf(n, path, "duration %s must not be negative", d.quoted(n, path))
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) decodeStringList(n *yaml.Node, path string, v reflect.Value) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag != "!!str" {
			d.errorf(n, path, "expected a name or a list of names, found %s", d.describe(n, path))
			return
		}
		v.Set(reflect.ValueOf(StringList{n.Value}))
	case yaml.SequenceNode:
		list := make(StringList, 0, len(n.Content))
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.pos[p] = nodePos(c)
			c, ok := d.expandScalar(c, p)
			if !ok {
				continue
			}
			if c.Kind != yaml.ScalarNode || c.Tag != "!!str" {
				d.errorf(c, p, "expected a name, found %s", d.describe(c, p))
				continue
			}
			list = append(list, c.Value)
		}
		v.Set(reflect.ValueOf(list))
	default:
		d.errorf(n, path, "expected a name or a list of names, found %s", d.describe(n, path))
	}
}

// fieldIndex caches, per struct type, the field index of each YAML key.
var fieldIndex sync.Map // reflect.Type -> map[string]int

func fieldsOf(t reflect.Type) map[string]int {
	if m, ok := fieldIndex.Load(t); ok {
		return m.(map[string]int)
	}
	m := make(map[string]int)
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		m[strings.Split(tag, ",")[0]] = i
	}
	fieldIndex.Store(t, m)
	return m
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) decodeStruct(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, found %s", d.describe(n, path))
		return
	}
	fields := fieldsOf(v.Type())
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		p := join(path, key)
		if seen[key] {
			d.errorf(k, p, "duplicate key")
			continue
		}
		seen[key] = true
		idx, ok := fields[key]
		if !ok {
			d.errorf(k, p, "unknown key%s", suggest(key, fields))
			if meant := closest(key, fields); meant != "" {
				// "upstrems:" leaves upstreams empty: every route would
				// name an undefined upstream.
				d.doubt[join(path, meant)] = true
			}
			continue
		}
		d.decode(val, p, v.Field(idx))
	}
}

func (d *decoder) decodeMap(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, found %s", d.describe(n, path))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(v.Type(), len(n.Content)/2))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "expected a name as key, found %s", d.describe(k, path))
			continue
		}
		if v.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			d.errorf(k, p, "duplicate key")
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, p, elem)
		v.SetMapIndex(reflect.ValueOf(k.Value), elem)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, found %s", d.describe(n, path))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		d.decode(c, fmt.Sprintf("%s[%d]", path, i), s.Index(i))
	}
	v.Set(s)
}

// suggest names the closest known key when the unknown one looks like a typo.
func suggest(key string, fields map[string]int) string {
	best := closest(key, fields)
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// closest is the known key nearest to key, or "" when none is near.
func closest(key string, fields map[string]int) string {
	best, bestDist := "", 3
	for k := range fields {
		if dist := levenshtein(key, k); dist < bestDist || (dist == bestDist && k < best) {
			best, bestDist = k, dist
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Decode decodes r into v (a pointer to a struct) with the same strict rules
// and positions as the routes file. Plugins call it on their config. The
// errors it returns are Errors located in the routes file.
func (r Raw) Decode(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("routes: Raw.Decode needs a non-nil pointer, got %T", v)
	}
	if r.Node == nil {
		return nil
	}
	d := newDecoder(r.File)
	d.expanded = r.expanded
	if r.env != nil {
		d.envVals = r.env
	}
	d.decode(r.Node, r.Path, rv.Elem())
	if len(d.errs) > 0 {
		d.errs.sort()
		return d.errs
	}
	return nil
}

// ErrorAt reports a problem found while using r (e.g. a plugin rejecting a
// value), located at r's position in the routes file.
func (r Raw) ErrorAt(key, format string, args ...any) *Error {
	e := &Error{File: r.File, Pos: nodePos(r.Node), Path: r.Path, Msg: fmt.Sprintf(format, args...)}
	if key != "" {
		e.Path = join(r.Path, key)
		if r.Node != nil && r.Node.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(r.Node.Content); i += 2 {
				if r.Node.Content[i].Value == key {
					e.Pos = nodePos(r.Node.Content[i+1])
				}
			}
		}
	}
	// A plugin quotes the value it refuses, which may be a secret read
	// from the environment.
	r.env.maskError(e)
	return e
}
