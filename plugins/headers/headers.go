// Package headers is the "headers" plugin: it sets, adds and removes request
// headers (before the upstream sees them) and response headers (after the
// upstream answered, so it can override or hide what the upstream sent).
package headers

import (
	"context"
	"net/http"
	"sort"
	"strings"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

func init() { plugins.Register("headers", factory) }

// Config is the plugin's config: section.
type Config struct {
	Request  Ops `yaml:"request"`
	Response Ops `yaml:"response"`
}

// Ops are applied in this order: remove, set, add.
type Ops struct {
	// Set replaces every value of the header.
	Set map[string]string `yaml:"set"`
	// Add appends a value, keeping those present.
	Add map[string]string `yaml:"add"`
	// Remove deletes the header.
	Remove []string `yaml:"remove"`
}

// Headers is a configured instance.
type Headers struct {
	req, res ops
}

type ops struct {
	remove []string
	set    []kv
	add    []kv
}

type kv struct{ k, v string }

func (o ops) empty() bool { return len(o.remove)+len(o.set)+len(o.add) == 0 }

func (o ops) apply(h http.Header) {
	for _, k := range o.remove {
		delete(h, k)
	}
	for _, p := range o.set {
		h[p.k] = []string{p.v}
	}
	for _, p := range o.add {
		h[p.k] = append(h[p.k], p.v)
	}
}

var _ plugins.Instance = (*Headers)(nil)

func factory(_ context.Context, raw routes.Raw) (plugins.Instance, error) {
	var cfg Config
	if err := raw.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(cfg, raw)
}

// framing headers describe the message itself: changing them would make the
// edge and the upstream (or the client) disagree on where a body ends.
var framing = map[string]bool{
	"Content-Length":    true,
	"Transfer-Encoding": true,
	"Connection":        true,
	"Upgrade":           true,
	"Te":                true,
	"Trailer":           true,
	"Host":              true,
}

// New checks cfg and builds the instance; errors are located through raw.
func New(cfg Config, raw routes.Raw) (*Headers, error) {
	h := &Headers{}
	var err error
	if h.req, err = compile(cfg.Request, "request", raw); err != nil {
		return nil, err
	}
	if h.res, err = compile(cfg.Response, "response", raw); err != nil {
		return nil, err
	}
	if h.req.empty() && h.res.empty() {
		return nil, raw.ErrorAt("", "nothing to do: give request or response with set, add or remove")
	}
	return h, nil
}

func compile(o Ops, side string, raw routes.Raw) (ops, error) {
	var out ops
	check := func(op, name string) (string, error) {
		if !validName(name) {
			return "", raw.ErrorAt(side, "%s %q: not a header name", op, name)
		}
		c := http.CanonicalHeaderKey(name)
		if framing[c] {
			return "", raw.ErrorAt(side, "%s %q: framing and connection headers are the edge's to manage", op, name)
		}
		return c, nil
	}
	for _, n := range o.Remove {
		c, err := check("remove", n)
		if err != nil {
			return out, err
		}
		out.remove = append(out.remove, c)
	}
	for _, pair := range []struct {
		op  string
		m   map[string]string
		dst *[]kv
	}{{"set", o.Set, &out.set}, {"add", o.Add, &out.add}} {
		// Map order is random; a stable order keeps repeated adds predictable.
		keys := make([]string, 0, len(pair.m))
		for k := range pair.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c, err := check(pair.op, k)
			if err != nil {
				return out, err
			}
			v := pair.m[k]
			if strings.ContainsAny(v, "\r\n\x00") {
				return out, raw.ErrorAt(side, "%s %q: a value cannot contain CR, LF or NUL", pair.op, k)
			}
			*pair.dst = append(*pair.dst, kv{c, v})
		}
	}
	return out, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// Wrap edits the request before next and the response header before it is
// sent.
func (h *Headers) Wrap(next http.Handler) http.Handler {
	// One hook for every request: it reads nothing but h, so it need not
	// be a closure (an allocation) per request.
	editResponse := func(_ int, hdr http.Header) { h.res.apply(hdr) }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.req.empty() {
			// The caller's request is not ours to mutate in place (a plugin
			// before us may still read it); edit a copy of the header.
			r = r.Clone(r.Context())
			h.req.apply(r.Header)
		}
		if h.res.empty() {
			next.ServeHTTP(w, r)
			return
		}
		hw := plugins.HookHeader(w, editResponse)
		next.ServeHTTP(hw, r)
		hw.Done()
	})
}
