// Package respond is the "respond" plugin: it answers every request itself
// with a fixed response (a maintenance page, a health route, a robots.txt)
// and never calls the upstream.
package respond

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

func init() { plugins.Register("respond", factory) }

// Config is the plugin's config: section.
type Config struct {
	// Status is the response status (default 200).
	Status int `yaml:"status"`
	// Body is the response body; BodyFile reads it from a file when the
	// routes file loads (a relative path is relative to the routes file).
	Body     string `yaml:"body"`
	BodyFile string `yaml:"body_file"`
	// ContentType defaults to text/plain; charset=utf-8 for a body.
	ContentType string `yaml:"content_type"`
	// Headers are set on the response (e.g. Retry-After for a 503).
	Headers map[string]string `yaml:"headers"`
	// Error answers in the edge's own error format instead of a fixed
	// body: the JSON error body with this message and the request id, or
	// a gRPC status for gRPC calls. It needs a 4xx or 5xx status (default
	// 500) and excludes body, body_file and content_type.
	Error string `yaml:"error"`
}

// MaxBodyBytes bounds body_file: the body is held in memory for the life of
// the configuration.
const MaxBodyBytes = 1 << 20

// Respond is a configured instance.
type Respond struct {
	status  int
	body    []byte
	headers http.Header
	errMsg  string // set: answer with httperr.Write

	// How a gRPC caller is answered (see grpcAnswer): with the gRPC
	// status grpcCode and grpcMsg when toGRPC, else as configured.
	toGRPC   bool
	grpcCode int
	grpcMsg  string
}

var _ plugins.Instance = (*Respond)(nil)

func factory(_ context.Context, raw routes.Raw) (plugins.Instance, error) {
	var cfg Config
	if err := raw.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(cfg, raw)
}

// New checks cfg, reads body_file, and builds the instance; errors are
// located through raw.
func New(cfg Config, raw routes.Raw) (*Respond, error) {
	p := &Respond{status: cfg.Status, body: []byte(cfg.Body), headers: http.Header{}, errMsg: cfg.Error}
	if cfg.Error != "" {
		if cfg.Body != "" || cfg.BodyFile != "" || cfg.ContentType != "" {
			return nil, raw.ErrorAt("error", "error answers with the edge's error body: body, body_file and content_type do not apply")
		}
		if strings.ContainsAny(cfg.Error, "\r\n\x00") {
			return nil, raw.ErrorAt("error", "a message cannot contain CR, LF or NUL")
		}
		if p.status == 0 {
			p.status = http.StatusInternalServerError
		}
		if p.status < 400 || p.status > 599 {
			return nil, raw.ErrorAt("status", "an error answer needs a 4xx or 5xx status (found %d)", p.status)
		}
	}
	if p.status == 0 {
		p.status = http.StatusOK
	}
	if p.status < 200 || p.status > 599 {
		return nil, raw.ErrorAt("status", "%d is not a final HTTP status (200-599)", p.status)
	}
	if cfg.BodyFile != "" {
		if cfg.Body != "" {
			return nil, raw.ErrorAt("body_file", "body and body_file are exclusive: use one")
		}
		path := cfg.BodyFile
		if !filepath.IsAbs(path) && raw.File != "" {
			path = filepath.Join(filepath.Dir(raw.File), path)
		}
		b, err := readFile(path)
		if err != nil {
			return nil, raw.ErrorAt("body_file", "%v", err)
		}
		p.body = b
	}
	if len(p.body) > 0 && (p.status == http.StatusNoContent || p.status == http.StatusNotModified) {
		return nil, raw.ErrorAt("body", "a %d response has no body", p.status)
	}
	keys := make([]string, 0, len(cfg.Headers))
	for k := range cfg.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := cfg.Headers[k]
		if !validName(k) {
			return nil, plugins.ConfigError(raw, "headers."+k, "%q is not a header name", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, plugins.ConfigError(raw, "headers."+k, "a value cannot contain CR, LF or NUL")
		}
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Transfer-Encoding", "Content-Type":
			return nil, plugins.ConfigError(raw, "headers."+k, "set by the plugin itself (use content_type for the type)")
		}
		p.headers.Set(k, v)
	}
	if err := p.grpcAnswer(cfg, raw); err != nil {
		return nil, err
	}
	if len(p.body) == 0 && httperr.IsGRPCContentType(cfg.ContentType) {
		// A gRPC answer written by hand is usually trailers-only: no
		// body, grpc-status under headers; it still needs its type.
		p.headers.Set("Content-Type", cfg.ContentType)
	}
	if len(p.body) > 0 {
		ct := cfg.ContentType
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		if strings.ContainsAny(ct, "\r\n\x00") {
			return nil, raw.ErrorAt("content_type", "a value cannot contain CR, LF or NUL")
		}
		p.headers.Set("Content-Type", ct)
		p.headers.Set("X-Content-Type-Options", "nosniff")
	}
	if p.status != http.StatusNoContent && p.status != http.StatusNotModified && p.errMsg == "" {
		p.headers.Set("Content-Length", strconv.Itoa(len(p.body)))
	}
	return p, nil
}

// grpcMessageBody bounds a body used as grpc-message: the message travels
// in a header, which clients bound, and a longer body is a page (HTML, a
// file), not a message.
const grpcMessageBody = 1 << 10

// grpcAnswer decides how a gRPC caller is answered. A gRPC client reads a
// status, not a page: a 403 with a text body reaches it as "Unavailable:
// unexpected HTTP status code", or "Unknown: unexpected content-type". So,
// as Envoy's direct_response and Kong's request-termination do for gRPC
// callers, the answer becomes a gRPC status (trailers-only) mapped from the
// HTTP status as for every refusal of the edge (httperr.GRPCCode), with
// the message as grpc-message. Two answers are left as configured:
//   - content_type is a gRPC type: the answer is already written for gRPC
//     callers (e.g. trailers-only with grpc-status under headers);
//   - status 200 with a body: content the user chose to serve (a health
//     page, robots.txt), not a refusal; mapped, it would turn into the
//     error UNKNOWN, which no one configuring a 200 asked for.
//
// A grpc-status under headers is the code instead of the mapped one (as in
// Envoy, where a configured grpc-status is kept), a grpc-message under
// headers (percent-encoded, as on the wire) the message. Otherwise the
// message is error, else the body when it is short UTF-8 text/plain, else the
// status's reason phrase.
func (p *Respond) grpcAnswer(cfg Config, raw routes.Raw) error {
	p.toGRPC = !httperr.IsGRPCContentType(cfg.ContentType) && (p.status != http.StatusOK || len(p.body) == 0)
	p.grpcCode = httperr.GRPCCode(p.status)
	if v := p.headers.Get("Grpc-Status"); v != "" {
		code, err := strconv.Atoi(v)
		if err != nil || code < 0 || code > 16 || strconv.Itoa(code) != v {
			return plugins.ConfigError(raw, "headers."+headerKey(cfg.Headers, "Grpc-Status"), "grpc-status must be a gRPC status code, 0 to 16 (found %q)", v)
		}
		p.grpcCode = code
	}
	switch body := strings.TrimRight(string(p.body), "\r\n"); {
	case p.errMsg != "":
		p.grpcMsg = p.errMsg
	case p.headers.Get("Grpc-Message") != "":
		msg, err := url.PathUnescape(p.headers.Get("Grpc-Message"))
		if err != nil {
			return plugins.ConfigError(raw, "headers."+headerKey(cfg.Headers, "Grpc-Message"), "grpc-message is percent-encoded: %v", err)
		}
		p.grpcMsg = msg
	case body != "" && len(body) <= grpcMessageBody && utf8.ValidString(body) && plainText(cfg.ContentType):
		p.grpcMsg = body
	default:
		p.grpcMsg = http.StatusText(p.status)
	}
	return nil
}

// plainText reports whether a body of content type ct (empty: the default,
// text/plain) reads as a message.
func plainText(ct string) bool {
	const prefix = "text/plain"
	return ct == "" || len(ct) >= len(prefix) && strings.EqualFold(ct[:len(prefix)], prefix)
}

// headerKey is the key of headers that names the field canonical, as the
// user spelled it (for the error's key path).
func headerKey(headers map[string]string, canonical string) string {
	for k := range headers {
		if http.CanonicalHeaderKey(k) == canonical {
			return k
		}
	}
	return canonical
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading body_file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading body_file %s: %w", path, err)
	}
	if len(b) > MaxBodyBytes {
		return nil, fmt.Errorf("body_file %s is larger than %d KiB", path, MaxBodyBytes>>10)
	}
	return b, nil
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

// Wrap answers every request; next is never called.
func (p *Respond) Wrap(http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range p.headers {
			h[k] = append([]string(nil), v...) // a later Add must not write into the shared slice
		}
		if p.toGRPC && httperr.IsGRPC(r) {
			httperr.WriteGRPCStatus(w, r, p.grpcCode, p.grpcMsg)
			return
		}
		if p.errMsg != "" {
			httperr.Write(w, r, p.status, p.errMsg)
			return
		}
		w.WriteHeader(p.status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(p.body)
		}
	})
}
