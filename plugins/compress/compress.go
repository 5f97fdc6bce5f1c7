// Package compress is the "compress" plugin: it compresses responses with
// zstd or gzip, whichever the client prefers among those configured, and
// leaves alone what is already compressed, too small, or must not change.
package compress

import (
	"context"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func init() { plugins.Register("compress", factory) }

// Config is the plugin's config: section.
type Config struct {
	// Encodings, in the server's order of preference when the client
	// likes several equally (default [zstd, gzip]).
	Encodings []string `yaml:"encodings"`
	// MinLength is the smallest body compressed (default 1024 bytes):
	// below it the framing costs more than it saves.
	MinLength int `yaml:"min_length"`
	// Level is fastest, default or best.
	Level string `yaml:"level"`
	// ExcludeTypes are more media types ("application/x-foo", or
	// "application/*") never compressed, on top of the built-in list of
	// already-compressed types.
	ExcludeTypes []string `yaml:"exclude_types"`
}

// DefaultMinLength is min_length when it is left out.
const DefaultMinLength = 1024

// zstdWindow keeps the window within what every HTTP zstd decoder must
// accept (RFC 8878 section 3.1.1.1.2: 8 MiB), and pooled encoders small.
const zstdWindow = 1 << 20

// Compress is a configured instance.
type Compress struct {
	encodings []string
	minLength int
	exclude   []string // media types, or "type/" prefixes for "type/*"
	gzipLevel int
	zstdLevel zstd.EncoderLevel
	gzipPool  sync.Pool
	zstdPool  sync.Pool
}

var _ plugins.Instance = (*Compress)(nil)

// alreadyCompressed is the built-in exclusion list: compressing these again
// spends CPU to make them slightly larger.
var alreadyCompressed = []string{
	"image/", "video/", "audio/", "font/woff", "font/woff2",
	"application/zip", "application/gzip", "application/x-gzip", "application/zstd",
	"application/x-bzip2", "application/x-xz", "application/x-7z-compressed",
	"application/x-rar-compressed", "application/vnd.rar", "application/octet-stream",
	"application/pdf", "application/x-brotli", "application/grpc",
}

// compressibleImages are the image types that are text underneath.
var compressibleImages = []string{"image/svg+xml", "image/x-icon", "image/bmp"}

func factory(_ context.Context, raw routes.Raw) (plugins.Instance, error) {
	var cfg Config
	if err := raw.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(cfg, raw)
}

// New checks cfg and builds the instance; errors are located through raw.
func New(cfg Config, raw routes.Raw) (*Compress, error) {
	c := &Compress{encodings: cfg.Encodings, minLength: cfg.MinLength}
	if len(c.encodings) == 0 {
		c.encodings = []string{"zstd", "gzip"}
	}
	for i, e := range c.encodings {
		if e != "zstd" && e != "gzip" {
			return nil, raw.ErrorAt("encodings", "%q: supported encodings are zstd and gzip", e)
		}
		if slices.Contains(c.encodings[:i], e) {
			return nil, raw.ErrorAt("encodings", "%q is listed twice", e)
		}
	}
	if c.minLength < 0 {
		return nil, raw.ErrorAt("min_length", "must not be negative (found %d)", c.minLength)
	}
	if cfg.MinLength == 0 {
		c.minLength = DefaultMinLength
	}
	switch cfg.Level {
	case "", "default":
		c.gzipLevel, c.zstdLevel = gzip.DefaultCompression, zstd.SpeedDefault
	case "fastest":
		c.gzipLevel, c.zstdLevel = gzip.BestSpeed, zstd.SpeedFastest
	case "best":
		c.gzipLevel, c.zstdLevel = gzip.BestCompression, zstd.SpeedBestCompression
	default:
		return nil, raw.ErrorAt("level", "%q: use fastest, default or best", cfg.Level)
	}
	for _, t := range cfg.ExcludeTypes {
		t = strings.ToLower(strings.TrimSpace(t))
		typ, sub, ok := strings.Cut(t, "/")
		if !ok || typ == "" || sub == "" || strings.ContainsAny(t, " ;,") {
			return nil, raw.ErrorAt("exclude_types", "%q is not a media type such as application/x-foo or application/*", t)
		}
		if sub == "*" {
			t = typ + "/"
		}
		c.exclude = append(c.exclude, t)
	}
	// Fail at load, not at the first response, if an encoder cannot be made.
	zw, err := c.newZstd()
	if err != nil {
		return nil, raw.ErrorAt("level", "zstd: %v", err)
	}
	c.zstdPool.Put(zw)
	return c, nil
}

func (c *Compress) newZstd() (*zstd.Encoder, error) {
	// Concurrency 1 keeps the encoder synchronous: no goroutines per
	// response, and nothing left running after Close.
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(c.zstdLevel), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(zstdWindow), zstd.WithLowerEncoderMem(true))
}

// encoder is a pooled compressor writing into the response.
type encoder interface {
	io.WriteCloser
	Flush() error
}

func (c *Compress) getEncoder(enc string, w io.Writer) encoder {
	if enc == "gzip" {
		if zw, ok := c.gzipPool.Get().(*gzip.Writer); ok {
			zw.Reset(w)
			return zw
		}
		zw, _ := gzip.NewWriterLevel(w, c.gzipLevel) // the level was checked in New
		return zw
	}
	if zw, ok := c.zstdPool.Get().(*zstd.Encoder); ok {
		zw.Reset(w)
		return zw
	}
	zw, _ := c.newZstd() // the same options succeeded in New
	zw.Reset(w)
	return zw
}

func (c *Compress) putEncoder(e encoder) {
	switch zw := e.(type) {
	case *gzip.Writer:
		zw.Reset(io.Discard)
		c.gzipPool.Put(zw)
	case *zstd.Encoder:
		zw.Reset(nil)
		c.zstdPool.Put(zw)
	}
}

// negotiate picks the encoding from Accept-Encoding (RFC 9110 section
// 12.5.3): the highest q-value among the configured encodings, ties broken
// by the configured order; "" when none is acceptable.
func (c *Compress) negotiate(header []string) string {
	if len(header) == 0 {
		return ""
	}
	q := map[string]float64{}
	star := -1.0
	for _, v := range header {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			weight := 1.0
			for p := range strings.SplitSeq(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
					if err != nil || f < 0 || f > 1 {
						f = 0 // a malformed weight is not consent
					}
					weight = f
				}
			}
			if name == "x-gzip" {
				name = "gzip"
			}
			if name == "*" {
				star = weight
				continue
			}
			q[name] = weight
		}
	}
	best, bestQ := "", 0.0
	for _, e := range c.encodings {
		w, ok := q[e]
		if !ok {
			w = star
		}
		if w > bestQ {
			best, bestQ = e, w
		}
	}
	return best
}

// compressibleType reports whether a Content-Type may be compressed.
func (c *Compress) compressibleType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(ct))
	}
	match := func(list []string) bool {
		for _, x := range list {
			if mt == x || (strings.HasSuffix(x, "/") && strings.HasPrefix(mt, x)) {
				return true
			}
		}
		return false
	}
	if match(c.exclude) {
		return false
	}
	if slices.Contains(compressibleImages, mt) {
		return true
	}
	return !match(alreadyCompressed)
}

// Wrap compresses next's responses.
func (c *Compress) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		cw := &writer{ResponseWriter: w, c: c, enc: c.negotiate(r.Header.Values("Accept-Encoding"))}
		defer func() {
			if p := recover(); p != nil {
				// Closing the encoder would write a valid trailer and make a
				// cut-off body look complete; let net/http abort instead.
				panic(p)
			}
			cw.finish()
		}()
		next.ServeHTTP(cw, r)
	})
}

type state int

const (
	undecided   state = iota // no header yet
	buffering                // eligible, length unknown: holding bytes until min_length
	passthrough              // header sent, body sent as is
	compressing              // header sent, body through the encoder
)

// writer decides at the first byte (or at min_length bytes) whether to
// compress, because only then are the status, the headers and enough of the
// body known.
type writer struct {
	http.ResponseWriter
	c      *Compress
	enc    string
	state  state
	status int
	buf    []byte
	zw     encoder
}

func (w *writer) WriteHeader(status int) {
	if w.state != undecided {
		return // superfluous, as net/http would treat it
	}
	if status < 200 && status != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.status = status
	h := w.Header()
	if !w.eligible(h) {
		w.pass()
		return
	}
	typed := len(h["Content-Type"]) > 0
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n < int64(w.c.minLength) {
			w.pass()
			return
		}
	}
	if typed && h.Get("Content-Length") != "" {
		// A compressible type of a length worth compressing: compressed
		// for a client that accepts an encoding, so the answer depends
		// on Accept-Encoding whether or not this client accepts one.
		addVary(h)
		if w.enc != "" {
			w.start()
		} else {
			w.pass()
		}
		return
	}
	// The length, or the type of an untyped answer, is known only from
	// the body: held until min_length bytes (or the end) decide, for a
	// client that accepts no encoding too, so that Vary is stated only
	// when the answer would have been compressed for another one.
	w.state = buffering
}

// eligible checks everything that needs neither the body nor its length.
func (w *writer) eligible(h http.Header) bool {
	switch {
	case w.status == http.StatusNoContent, w.status == http.StatusNotModified,
		w.status == http.StatusPartialContent, w.status == http.StatusSwitchingProtocols:
		return false
	case h.Get("Content-Encoding") != "" && !strings.EqualFold(h.Get("Content-Encoding"), "identity"):
		return false
	case strings.Contains(strings.ToLower(strings.Join(h.Values("Cache-Control"), ",")), "no-transform"):
		return false
	}
	if ct := h.Get("Content-Type"); ct != "" && !w.c.compressibleType(ct) {
		return false
	}
	return true
}

func addVary(h http.Header) {
	for _, v := range h.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, "Accept-Encoding") {
				return
			}
		}
	}
	h.Add("Vary", "Accept-Encoding")
}

func (w *writer) pass() {
	w.state = passthrough
	w.ResponseWriter.WriteHeader(w.status)
}

func (w *writer) start() {
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Accept-Ranges") // byte ranges of the compressed stream mean nothing to the client
	h.Set("Content-Encoding", w.enc)
	if et := h.Get("ETag"); strings.HasPrefix(et, `"`) {
		// The bytes differ from the uncompressed representation's: a strong
		// validator would be a lie.
		h.Set("ETag", "W/"+et)
	}
	w.state = compressing
	w.ResponseWriter.WriteHeader(w.status)
	w.zw = w.c.getEncoder(w.enc, w.ResponseWriter)
}

// sniff sets Content-Type from the body as net/http would: the encoder's
// output must not be what gets sniffed. It returns the type the body has
// for deciding on compression. A nil Content-Type (the forwarder's mark
// for an upstream answer that stated none) is left as it is: the client
// gets no type the upstream did not send, but the decision is the same.
func (w *writer) sniff(p []byte) string {
	h := w.Header()
	if vs := h["Content-Type"]; len(vs) > 0 || len(p) == 0 {
		return h.Get("Content-Type")
	}
	ct := http.DetectContentType(p)
	if _, marked := h["Content-Type"]; !marked {
		h.Set("Content-Type", ct)
	}
	return ct
}

func (w *writer) Write(p []byte) (int, error) {
	if w.state == undecided {
		// Type not set yet: decide on what the body looks like.
		if _, ok := w.Header()["Content-Type"]; !ok {
			w.sniff(p)
		}
		w.WriteHeader(http.StatusOK)
	}
	switch w.state {
	case passthrough:
		return w.ResponseWriter.Write(p)
	case compressing:
		return w.zw.Write(p)
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= w.c.minLength {
		if err := w.commit(true, false); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// commit ends buffering and sends what was held; compress says the length
// allows compressing (min_length bytes held, or a flush), final that the
// handler is done, so what was held is the whole body. The answer is
// compressed if its type allows too and the client accepts an encoding;
// it varies on Accept-Encoding if it would be compressed for a client
// that accepts one.
func (w *writer) commit(compress, final bool) error {
	buf := w.buf
	w.buf = nil
	if len(w.Header()["Content-Type"]) == 0 {
		compress = compress && w.c.compressibleType(w.sniff(buf))
	}
	if compress {
		addVary(w.Header())
	}
	if !compress || w.enc == "" {
		if final {
			w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
		}
		w.pass()
		_, err := w.ResponseWriter.Write(buf)
		return err
	}
	w.start()
	_, err := w.zw.Write(buf)
	return err
}

// Flush sends what is held: a streaming response (server-sent events) is
// compressed from here on, flushing each piece through the encoder.
func (w *writer) Flush() {
	switch w.state {
	case undecided:
		w.WriteHeader(http.StatusOK)
		if w.state == buffering {
			_ = w.commit(true, false)
		}
	case buffering:
		_ = w.commit(true, false)
	}
	if w.state == compressing {
		_ = w.zw.Flush()
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish runs when the handler returned: a held small body goes out as is,
// an encoder is closed (writing its trailer) and pooled.
func (w *writer) finish() {
	switch w.state {
	case buffering:
		_ = w.commit(false, true)
	case compressing:
		_ = w.zw.Close()
		w.c.putEncoder(w.zw)
		w.zw = nil
	}
}

var _ http.Flusher = (*writer)(nil)
