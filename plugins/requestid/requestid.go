// Package requestid is the "request_id" plugin. The edge already gives
// every request an id in X-Request-Id before any plugin runs; this plugin is
// for routes whose upstreams expect the id under another header or in
// another format, or whose clients should see it on the response.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

func init() { plugins.Register("request_id", factory) }

// Config is the plugin's config: section.
type Config struct {
	// Header carries the id to the upstream (default X-Request-Id).
	Header string `yaml:"header"`
	// Generate is where the id comes from: "edge" (default) reuses the id
	// the edge gave the request; "uuid" (random, version 4) or "hex" (128
	// random bits) make a new one.
	Generate string `yaml:"generate"`
	// KeepIncoming keeps a well-formed id the client sent in Header instead
	// of replacing it (ids from clients can be forged: use it only when the
	// client is another trusted system).
	KeepIncoming bool `yaml:"keep_incoming"`
	// Echo sets Header on the response too (default true).
	Echo *bool `yaml:"echo"`
}

// RequestID is a configured instance.
type RequestID struct {
	header       string
	generate     func() string
	keepIncoming bool
	echo         bool
}

var _ plugins.Instance = (*RequestID)(nil)

func factory(_ context.Context, raw routes.Raw) (plugins.Instance, error) {
	var cfg Config
	if err := raw.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(cfg, raw)
}

var headerRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// incomingRe bounds what a client may send as an id: it ends up in logs and
// upstream headers, so no spaces, quotes or control characters.
var incomingRe = regexp.MustCompile(`^[A-Za-z0-9._:+/=@-]{1,128}$`)

// New checks cfg and builds the instance; errors are located through raw.
func New(cfg Config, raw routes.Raw) (*RequestID, error) {
	p := &RequestID{header: plugins.RequestIDHeader, keepIncoming: cfg.KeepIncoming, echo: true}
	if cfg.Header != "" {
		if !headerRe.MatchString(cfg.Header) {
			return nil, raw.ErrorAt("header", "%q is not a header name", cfg.Header)
		}
		p.header = http.CanonicalHeaderKey(cfg.Header)
	}
	switch cfg.Generate {
	case "", "edge":
		if cfg.KeepIncoming && p.header == plugins.RequestIDHeader {
			return nil, raw.ErrorAt("keep_incoming", "the edge decides whether to keep a client's %s; keep_incoming applies to another header", plugins.RequestIDHeader)
		}
	case "uuid":
		p.generate = newUUID
	case "hex":
		p.generate = newHex
	default:
		return nil, raw.ErrorAt("generate", "%q: use edge, uuid or hex", cfg.Generate)
	}
	if cfg.Echo != nil {
		p.echo = *cfg.Echo
	}
	if p.generate == nil && p.header == plugins.RequestIDHeader && !p.echo {
		return nil, raw.ErrorAt("", "nothing to do: the edge already sets %s; set header, generate or echo", plugins.RequestIDHeader)
	}
	return p, nil
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

func newHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Wrap puts the id on the request (and the response).
func (p *RequestID) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := ""
		if p.keepIncoming {
			if v := r.Header.Get(p.header); incomingRe.MatchString(v) {
				id = v
			}
		}
		if id == "" {
			if p.generate != nil {
				id = p.generate()
			} else {
				id = plugins.RequestID(r)
			}
		}
		r = r.Clone(r.Context())
		r.Header.Set(p.header, id)
		if p.header == plugins.RequestIDHeader {
			// Error bodies and logs after this point name the new id.
			info := plugins.Info(r.Context())
			info.RequestID = id
			r = r.WithContext(plugins.WithRequestInfo(r.Context(), info))
		}
		if !p.echo {
			next.ServeHTTP(w, r)
			return
		}
		hw := plugins.HookHeader(w, func(_ int, h http.Header) { h.Set(p.header, id) })
		next.ServeHTTP(hw, r)
		hw.Done()
	})
}
