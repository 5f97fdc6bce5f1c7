// Package cache is the "cache" plugin: a shared, in-memory HTTP cache for
// GET and HEAD that follows the upstream's Cache-Control (RFC 9111), bounded
// in bytes with least-recently-used eviction.
package cache

import (
	"container/list"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/causewayhq/causeway/auth"
	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

func init() { plugins.Register("cache", factory) }

// Config is the plugin's config: section.
type Config struct {
	// MaxBytes bounds the memory the stored responses take (default 64 MiB).
	MaxBytes int `yaml:"max_bytes"`
	// MaxEntryBytes is the largest response body stored (default 1 MiB).
	MaxEntryBytes int `yaml:"max_entry_bytes"`
	// DefaultTTL is how long a 200 without any freshness information
	// (max-age, s-maxage, Expires) is kept; 0 (default) stores only
	// responses that say how long they stay fresh.
	DefaultTTL routes.Duration `yaml:"default_ttl"`
}

// Defaults for keys left out.
const (
	DefaultMaxBytes      = 64 << 20
	DefaultMaxEntryBytes = 1 << 20
)

// Cache is a configured instance. Its memory is released by Close, which
// the gateway calls when a reload drops the instance.
type Cache struct {
	maxBytes, maxEntry int64
	defaultTTL         time.Duration
	now                func() time.Time // injected by tests

	mu      sync.Mutex
	entries map[string]*list.Element // variant key -> element holding *entry
	vary    map[string]*varyInfo     // primary key -> the Vary of its responses
	lru     *list.List               // front: most recently used
	size    int64
	closed  bool
}

type varyInfo struct {
	names []string // canonical header names the response varies on
	count int      // stored variants under this primary key
}

type entry struct {
	primary, key string
	status       int
	header       http.Header
	body         []byte
	stored       time.Time     // when the response arrived
	initialAge   time.Duration // the upstream's Age at that time
	fresh        time.Duration // freshness lifetime
	shared       bool          // public, s-maxage or must-revalidate: usable for authenticated requests
	size         int64
}

var (
	_ plugins.Instance           = (*Cache)(nil)
	_ interface{ Close() error } = (*Cache)(nil)
)

func factory(_ context.Context, raw routes.Raw) (plugins.Instance, error) {
	var cfg Config
	if err := raw.Decode(&cfg); err != nil {
		return nil, err
	}
	return New(cfg, raw)
}

// New checks cfg and builds the instance; errors are located through raw.
func New(cfg Config, raw routes.Raw) (*Cache, error) {
	c := &Cache{
		maxBytes:   int64(cfg.MaxBytes),
		maxEntry:   int64(cfg.MaxEntryBytes),
		defaultTTL: cfg.DefaultTTL.D(),
		now:        time.Now,
		entries:    map[string]*list.Element{},
		vary:       map[string]*varyInfo{},
		lru:        list.New(),
	}
	if c.maxBytes < 0 {
		return nil, raw.ErrorAt("max_bytes", "must not be negative (found %d)", c.maxBytes)
	}
	if c.maxEntry < 0 {
		return nil, raw.ErrorAt("max_entry_bytes", "must not be negative (found %d)", c.maxEntry)
	}
	if c.maxBytes == 0 {
		c.maxBytes = DefaultMaxBytes
	}
	if c.maxEntry == 0 {
		c.maxEntry = min(DefaultMaxEntryBytes, c.maxBytes)
	}
	if c.maxEntry > c.maxBytes {
		return nil, raw.ErrorAt("max_entry_bytes", "%d exceeds max_bytes (%d)", c.maxEntry, c.maxBytes)
	}
	return c, nil
}

// Close drops every stored response; later requests pass through uncached.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.entries = map[string]*list.Element{}
	c.vary = map[string]*varyInfo{}
	c.lru.Init()
	c.size = 0
	return nil
}

// Len returns the number of stored responses and their size in bytes.
func (c *Cache) Len() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.size
}

// Header values the plugin sets on what it answers.
const (
	StatusHeader = "X-Cache"
	hit          = "HIT"
	miss         = "MISS"
)

// Wrap serves fresh stored responses and stores cacheable ones.
func (c *Cache) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
			// RFC 9111 section 4.4: a successful unsafe request makes what
			// is stored for its URI stale.
			sw := &statusWriter{ResponseWriter: w}
			next.ServeHTTP(sw, r)
			if sw.status >= 200 && sw.status < 400 {
				c.invalidate(primaryKey(r))
			}
			return
		default:
			next.ServeHTTP(w, r)
			return
		}
		req := parseCacheControl(r.Header.Values("Cache-Control"))
		if len(r.Header.Values("Cache-Control")) == 0 && strings.EqualFold(r.Header.Get("Pragma"), "no-cache") {
			req.noCache = true
		}
		authed := r.Header.Get("Authorization") != "" || auth.FromContext(r.Context()) != nil
		primary := primaryKey(r)
		if !req.noStore && !req.noCache && req.maxAge != 0 {
			if e, age, ok := c.lookup(primary, r, authed, req); ok {
				serve(w, r, e, age)
				return
			}
		}
		if req.onlyIfCached {
			plugins.Error(w, r, http.StatusGatewayTimeout, "not in cache")
			return
		}
		// Partial and conditional responses are not whole representations:
		// pass them through without storing.
		if r.Method == http.MethodHead || req.noStore || r.Header.Get("Range") != "" ||
			r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" {
			hw := plugins.HookHeader(w, func(_ int, h http.Header) { h.Set(StatusHeader, miss) })
			next.ServeHTTP(hw, r)
			hw.Done()
			return
		}
		cw := &captureWriter{ResponseWriter: w, c: c, authed: authed}
		next.ServeHTTP(cw, r)
		if !cw.wroteHeader {
			cw.WriteHeader(http.StatusOK)
		}
		if cw.store {
			c.add(primary, r, cw)
		}
	})
}

// primaryKey is the request's target: host and the URI as sent.
func primaryKey(r *http.Request) string {
	return strings.ToLower(r.Host) + r.URL.RequestURI()
}

// variantKey adds the request's values of the headers the response varies
// on, normalised so that header order and spacing do not split entries.
func variantKey(primary string, names []string, r *http.Request) string {
	if len(names) == 0 {
		return primary
	}
	var b strings.Builder
	b.WriteString(primary)
	for _, n := range names {
		b.WriteByte(0)
		b.WriteString(n)
		b.WriteByte('=')
		vals := r.Header.Values(n)
		for i, v := range vals {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.Join(strings.Fields(v), " "))
		}
	}
	return b.String()
}

func (c *Cache) lookup(primary string, r *http.Request, authed bool, req cacheControl) (*entry, time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, 0, false
	}
	var names []string
	if vi := c.vary[primary]; vi != nil {
		names = vi.names
	}
	el, ok := c.entries[variantKey(primary, names, r)]
	if !ok {
		return nil, 0, false
	}
	e := el.Value.(*entry)
	age := e.initialAge + c.now().Sub(e.stored)
	if age >= e.fresh {
		c.remove(el) // stale: without revalidation it is of no further use
		return nil, 0, false
	}
	if authed && !e.shared {
		return nil, 0, false
	}
	if req.maxAge > 0 && age > time.Duration(req.maxAge)*time.Second {
		return nil, 0, false
	}
	if req.minFresh > 0 && e.fresh-age < time.Duration(req.minFresh)*time.Second {
		return nil, 0, false
	}
	c.lru.MoveToFront(el)
	return e, age, true
}

func serve(w http.ResponseWriter, r *http.Request, e *entry, age time.Duration) {
	h := w.Header()
	if etag := e.header.Get("ETag"); etag != "" && etagMatch(r.Header.Values("If-None-Match"), etag) {
		for _, k := range []string{"Etag", "Cache-Control", "Content-Location", "Date", "Expires", "Vary"} {
			if v, ok := e.header[k]; ok {
				h[k] = slices.Clone(v)
			}
		}
		h.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
		h.Set(StatusHeader, hit)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	for k, v := range e.header {
		h[k] = slices.Clone(v) // the entry is shared; later plugins may append
	}
	h.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
	h.Set(StatusHeader, hit)
	if e.status != http.StatusNoContent && e.status != http.StatusNotModified {
		h.Set("Content-Length", strconv.Itoa(len(e.body)))
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.body)
	}
}

// etagMatch is the weak comparison If-None-Match uses (RFC 9110 13.1.2).
func etagMatch(header []string, etag string) bool {
	etag = strings.TrimPrefix(etag, "W/")
	for _, v := range header {
		for t := range strings.SplitSeq(v, ",") {
			t = strings.TrimSpace(t)
			if t == "*" || strings.TrimPrefix(t, "W/") == etag {
				return true
			}
		}
	}
	return false
}

func (c *Cache) add(primary string, r *http.Request, cw *captureWriter) {
	names := varyNames(cw.header)
	e := &entry{
		primary:    primary,
		key:        variantKey(primary, names, r),
		status:     cw.status,
		header:     cw.header,
		body:       cw.buf,
		stored:     cw.at,
		initialAge: cw.initialAge,
		fresh:      cw.fresh,
		shared:     cw.shared,
	}
	e.size = int64(len(e.body)+len(e.key)) + headerSize(e.header) + 128
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || e.size > c.maxBytes {
		return
	}
	if vi := c.vary[primary]; vi != nil && !slices.Equal(vi.names, names) {
		// The upstream changed what it varies on: the old variants can no
		// longer be found, so drop them now rather than wait for eviction.
		c.dropPrimary(primary)
	}
	if el, ok := c.entries[e.key]; ok {
		c.remove(el)
	}
	for c.size+e.size > c.maxBytes && c.lru.Len() > 0 {
		c.remove(c.lru.Back())
	}
	c.entries[e.key] = c.lru.PushFront(e)
	c.size += e.size
	vi := c.vary[primary]
	if vi == nil {
		vi = &varyInfo{names: names}
		c.vary[primary] = vi
	}
	vi.count++
}

func (c *Cache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*entry)
	delete(c.entries, e.key)
	c.size -= e.size
	if vi := c.vary[e.primary]; vi != nil {
		if vi.count--; vi.count <= 0 {
			delete(c.vary, e.primary)
		}
	}
}

// dropPrimary removes every variant stored under primary.
func (c *Cache) dropPrimary(primary string) {
	for el := c.lru.Front(); el != nil; {
		next := el.Next()
		if el.Value.(*entry).primary == primary {
			c.remove(el)
		}
		el = next
	}
}

func (c *Cache) invalidate(primary string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.vary[primary]; ok {
		c.dropPrimary(primary)
	}
}

func headerSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

// varyNames returns the canonical, sorted names in Vary; ["*"] for "*".
func varyNames(h http.Header) []string {
	var names []string
	for _, v := range h.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				names = append(names, http.CanonicalHeaderKey(f))
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// statusWriter records the status of a response it passes through.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 && status >= 200 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// captureWriter passes the response to the client and keeps a copy when it
// may be stored.
type captureWriter struct {
	http.ResponseWriter
	c           *Cache
	authed      bool
	wroteHeader bool
	store       bool
	status      int
	header      http.Header
	buf         []byte
	at          time.Time
	initialAge  time.Duration
	fresh       time.Duration
	shared      bool
}

// heuristicallyCacheable are the statuses RFC 9110 section 15.1 lets a
// cache store; others are only stored with explicit freshness.
var heuristicallyCacheable = map[int]bool{200: true, 203: true, 204: true, 300: true, 301: true, 308: true, 404: true, 405: true, 410: true, 414: true, 501: true}

func (w *captureWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	if status < 200 {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.wroteHeader = true
	w.status = status
	h := w.ResponseWriter.Header()
	w.decide(h)
	if w.store {
		w.header = h.Clone()
		w.header.Del(StatusHeader)
	}
	h.Set(StatusHeader, miss)
	w.ResponseWriter.WriteHeader(status)
}

// decide applies RFC 9111 section 3: may this response be stored, and for
// how long is it fresh?
func (w *captureWriter) decide(h http.Header) {
	w.at = w.c.now()
	res := parseCacheControl(h.Values("Cache-Control"))
	switch {
	case res.noStore, res.private, res.noCache, res.invalid:
		return
	case h.Get("Set-Cookie") != "":
		// A cookie is meant for one client.
		return
	case slices.Contains(varyNames(h), "*"):
		return
	case w.authed && !res.public && res.sMaxAge < 0 && !res.mustRevalidate:
		return
	case !heuristicallyCacheable[w.status] && w.status != 302 && w.status != 307:
		return
	}
	date := w.at
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		date = d
	}
	switch {
	case res.sMaxAge >= 0:
		w.fresh = time.Duration(res.sMaxAge) * time.Second
	case res.maxAge >= 0:
		w.fresh = time.Duration(res.maxAge) * time.Second
	case h.Get("Expires") != "":
		// An invalid Expires ("0") means already expired.
		if exp, err := http.ParseTime(h.Get("Expires")); err == nil {
			w.fresh = exp.Sub(date)
		}
	case w.status == http.StatusOK && w.c.defaultTTL > 0:
		w.fresh = w.c.defaultTTL
	}
	if w.fresh <= 0 {
		return
	}
	if a, err := strconv.ParseInt(h.Get("Age"), 10, 64); err == nil && a > 0 {
		w.initialAge = time.Duration(a) * time.Second
	}
	if w.initialAge >= w.fresh {
		return
	}
	if cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && cl > w.c.maxEntry {
		return
	}
	w.shared = res.public || res.sMaxAge >= 0 || res.mustRevalidate
	w.store = true
}

func (w *captureWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.store {
		if int64(len(w.buf)+len(b)) > w.c.maxEntry {
			w.store, w.buf, w.header = false, nil, nil
		} else {
			w.buf = append(w.buf, b...)
		}
	}
	return w.ResponseWriter.Write(b)
}

func (w *captureWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *captureWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// cacheControl is a parsed Cache-Control; -1 means a delta is absent.
type cacheControl struct {
	noStore, noCache, private, public, mustRevalidate, onlyIfCached bool
	maxAge, sMaxAge, minFresh                                       int64
	// invalid is set by a malformed delta, which makes a response stale.
	invalid bool
}

func parseCacheControl(values []string) cacheControl {
	cc := cacheControl{maxAge: -1, sMaxAge: -1, minFresh: -1}
	for _, v := range values {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, hasArg := strings.Cut(strings.TrimSpace(d), "=")
			name = strings.ToLower(strings.TrimSpace(name))
			arg = strings.Trim(strings.TrimSpace(arg), `"`)
			delta := func() int64 {
				n, err := strconv.ParseInt(arg, 10, 64)
				if !hasArg || err != nil || n < 0 {
					cc.invalid = true
					return 0
				}
				return n
			}
			switch name {
			case "no-store":
				cc.noStore = true
			case "no-cache":
				// "no-cache=Set-Cookie" only restricts named fields; storing
				// without them is allowed but not worth the complexity.
				cc.noCache = true
			case "private":
				cc.private = true
			case "public":
				cc.public = true
			case "must-revalidate", "proxy-revalidate":
				cc.mustRevalidate = true
			case "only-if-cached":
				cc.onlyIfCached = true
			case "max-age":
				cc.maxAge = delta()
			case "s-maxage":
				cc.sMaxAge = delta()
			case "min-fresh":
				cc.minFresh = delta()
			}
		}
	}
	return cc
}
