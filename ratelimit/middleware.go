package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// KeySources lets the gateway supply request facts the ratelimit package
// must not know how to compute (it may not import auth).
type KeySources struct {
	// ClientIP returns the client's address, already honouring trusted
	// proxies. Nil: ClientIPFunc over the file's trusted_proxies.
	ClientIP func(r *http.Request) string
	// Claim returns a claim of the authenticated token as a string.
	Claim func(r *http.Request, name string) (string, bool)
	// APIKey returns the authenticated key's name.
	APIKey func(r *http.Request) (string, bool)
}

// unknownPart stands for a key part that cannot be computed (no such
// claim, header or key). Every such request shares it, so a missing part
// is limited, never unlimited. Parts are URL-escaped, and escaping turns
// '!' into %21, so no real value can collide with it.
const unknownPart = "!unknown"

// maxKeyLen bounds a bucket key; longer ones (a huge header value) are
// hashed so a client cannot make Redis or memory hold its payload.
const maxKeyLen = 200

// Header names of the responses of a limited route (IETF draft
// "RateLimit header fields for HTTP").
const (
	HeaderLimit     = "RateLimit-Limit"
	HeaderRemaining = "RateLimit-Remaining"
	HeaderReset     = "RateLimit-Reset"
)

// routeLimit is one limit of a route, ready to evaluate per request.
type routeLimit struct {
	limit Limit
	sig   string
	// lease: mode lease, with lb the lease-sized bucket and hold how long
	// a leased token stays spendable (µs).
	lease   bool
	lb      bucket
	hold    int64
	parts   []func(r *http.Request) string
	allowed prometheus.Counter
	limited prometheus.Counter
	errored prometheus.Counter
}

// Middleware enforces the route's limits (route.RateLimit, all must pass,
// checked in order; a request refused by one still counts against those
// checked before it), sets RateLimit-* headers on every response of a
// limited route, and answers 429 with Retry-After or, with on_error: deny
// while Redis is unreachable, 503. It uses the configuration current when
// it is built.
func (s *Service) Middleware(route routes.Route, src KeySources) (func(http.Handler) http.Handler, error) {
	return s.middleware(s.cur.Load(), route, src)
}

func (s *Service) middleware(snap *snapshot, route routes.Route, src KeySources) (func(http.Handler) http.Handler, error) {
	if snap == nil {
		return nil, fmt.Errorf("ratelimit: route %q: Configure has not been called", route.Name)
	}
	if len(route.RateLimit) == 0 {
		return func(next http.Handler) http.Handler { return next }, nil
	}
	clientIP := src.ClientIP
	if clientIP == nil {
		clientIP = ClientIPFunc(snap.trusted)
	}
	lims := make([]*routeLimit, 0, len(route.RateLimit))
	for _, name := range route.RateLimit {
		rl, ok := snap.limits[name]
		if !ok {
			return nil, fmt.Errorf("ratelimit: route %q: undefined rate limit %q", route.Name, name)
		}
		l := LimitFromRoutes(name, rl)
		b, err := l.bucket()
		if err != nil {
			return nil, fmt.Errorf("ratelimit: route %q: %w", route.Name, err)
		}
		rlim := &routeLimit{limit: l, sig: b.signature()}
		if rl.Mode == routes.RateLimitLease && snap.store != nil {
			rlim.lease, rlim.lb, rlim.hold = true, leaseBucket(b), leaseHold(b)
			rlim.sig = rlim.lb.signature() + "/lease"
		}
		ipOf := clientIP
		if bits := rl.IPv6Prefix; bits > 0 && bits < 128 {
			ipOf = maskIPv6(clientIP, bits)
		}
		for _, part := range routes.RateLimitKeyParts(rl.Key) {
			fn, err := keyPart(part, route.Name, ipOf, src)
			if err != nil {
				return nil, fmt.Errorf("ratelimit %q: route %q: %w", name, route.Name, err)
			}
			rlim.parts = append(rlim.parts, fn)
		}
		if v := s.opts.Decisions; v != nil {
			var errs [3]error
			rlim.allowed, errs[0] = v.GetMetricWithLabelValues(name, DecisionAllowed)
			rlim.limited, errs[1] = v.GetMetricWithLabelValues(name, DecisionLimited)
			rlim.errored, errs[2] = v.GetMetricWithLabelValues(name, DecisionError)
			if err := errors.Join(errs[:]...); err != nil {
				return nil, fmt.Errorf("ratelimit: decisions metric needs labels limit and decision: %w", err)
			}
		}
		lims = append(lims, rlim)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.serve(w, r, next, snap, lims)
		})
	}, nil
}

func keyPart(part, routeName string, clientIP func(*http.Request) string, src KeySources) (func(*http.Request) string, error) {
	kind, arg, _ := strings.Cut(part, ":")
	switch kind {
	case "client_ip":
		return clientIP, nil
	case "route":
		return func(*http.Request) string { return routeName }, nil
	case "header":
		if arg == "" {
			return nil, errors.New("header: needs a name")
		}
		return func(r *http.Request) string { return r.Header.Get(arg) }, nil
	case "claim":
		if src.Claim == nil {
			return nil, fmt.Errorf("key part %q: the gateway supplied no claim source", part)
		}
		return func(r *http.Request) string {
			v, _ := src.Claim(r, arg)
			return v
		}, nil
	case "api_key":
		if src.APIKey == nil {
			return nil, fmt.Errorf("key part %q: the gateway supplied no API key source", part)
		}
		return func(r *http.Request) string {
			v, _ := src.APIKey(r)
			return v
		}, nil
	}
	return nil, fmt.Errorf("unknown key part %q", part)
}

// maskIPv6 keeps the first bits of an IPv6 client address, so a host that
// owns a whole prefix cannot rotate addresses within it to escape its limit.
// IPv4 addresses and values that are not addresses pass unchanged.
func maskIPv6(clientIP func(*http.Request) string, bits int) func(*http.Request) string {
	return func(r *http.Request) string {
		v := clientIP(r)
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is6() || a.Is4In6() {
			return v
		}
		p, err := a.WithZone("").Prefix(bits)
		if err != nil {
			return v
		}
		return p.String()
	}
}

// key builds the bucket key of r: parts escaped and joined by "|", so
// ("a|b", "c") and ("a", "b|c") stay apart.
func (rl *routeLimit) key(r *http.Request) string {
	var b strings.Builder
	for i, part := range rl.parts {
		if i > 0 {
			b.WriteByte('|')
		}
		if v := part(r); v != "" {
			b.WriteString(url.QueryEscape(v))
		} else {
			b.WriteString(unknownPart)
		}
	}
	k := b.String()
	if len(k) > maxKeyLen {
		h := sha256.Sum256([]byte(k))
		k = "sha256:" + hex.EncodeToString(h[:])
	}
	return k
}

func (s *Service) serve(w http.ResponseWriter, r *http.Request, next http.Handler, snap *snapshot, lims []*routeLimit) {
	var report Decision
	for i, rl := range lims {
		d, err := s.decide(r.Context(), snap, rl, rl.key(r))
		if err != nil {
			if r.Context().Err() != nil {
				return // the client has gone; nobody reads an answer
			}
			w.Header().Set("Retry-After", "1")
			httperr.Write(w, r, http.StatusServiceUnavailable, "rate limiting is unavailable")
			return
		}
		if !d.Allowed {
			setHeaders(w.Header(), d)
			w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(d.RetryAfter.Microseconds()), 10))
			httperr.Write(w, r, http.StatusTooManyRequests, "too many requests")
			return
		}
		// Report the limit closest to refusing.
		if i == 0 || d.Remaining < report.Remaining || (d.Remaining == report.Remaining && d.ResetAfter > report.ResetAfter) {
			report = d
		}
	}
	setHeaders(w.Header(), report)
	next.ServeHTTP(w, r)
}

// The header names as http.Header stores them. The draft's spelling
// ("RateLimit-") is not canonical, so Header.Set would canonicalize it
// again, a new string, on every response of a limited route.
var (
	canonicalLimit     = http.CanonicalHeaderKey(HeaderLimit)
	canonicalRemaining = http.CanonicalHeaderKey(HeaderRemaining)
	canonicalReset     = http.CanonicalHeaderKey(HeaderReset)
)

// setHeaders sets what Header.Set would, the three values sharing one
// array instead of a slice each. Each slice is capped, so an Add to one
// (a proxied response carrying its own) copies it rather than write into
// its neighbour.
func setHeaders(h http.Header, d Decision) {
	vals := &[3]string{
		strconv.Itoa(d.Limit),
		strconv.Itoa(d.Remaining),
		strconv.FormatInt(ceilSeconds(d.ResetAfter.Microseconds()), 10),
	}
	h[canonicalLimit] = vals[0:1:1]
	h[canonicalRemaining] = vals[1:2:2]
	h[canonicalReset] = vals[2:3:3]
}

// ceilSeconds rounds up: a client told to wait 0 s when 300 ms remain
// would only be refused again.
func ceilSeconds(us int64) int64 { return ceilDiv(us, 1_000_000) }

var errUnavailable = errors.New("ratelimit: redis unreachable and on_error is deny")

// decide makes one decision: from the local memory of refusals, from Redis,
// or, when Redis cannot answer, as on_error says.
func (s *Service) decide(ctx context.Context, snap *snapshot, rl *routeLimit, key string) (Decision, error) {
	st := snap.store
	if st == nil {
		d, err := s.mem.Allow(ctx, key, rl.limit)
		if err == nil {
			rl.count(d)
		}
		return d, err
	}
	cacheKey := rl.limit.Name + "\x00" + rl.sig + "\x00" + key
	now := s.now().UnixMicro()
	if d, ok := s.denied.get(cacheKey, now); ok {
		rl.count(d)
		return d, nil
	}
	allow := func() (Decision, error) { return st.limiter.Allow(ctx, key, rl.limit) }
	if rl.lease {
		if d, ok := s.spendLease(st, rl, key); ok {
			rl.count(d)
			return d, nil
		}
		allow = func() (Decision, error) { return s.takeLease(ctx, st, rl, key) }
	}
	// One Cluster master failing sends only the keys in its slots to
	// on_error: the others keep their exact limits.
	b := st.conn.breakerFor(ctx, func() string { return st.limiter.Key(rl.limit, key) })
	if b.usable(now) {
		d, err := allow()
		if err == nil {
			b.report(s.log, nil, now)
			s.denied.put(cacheKey, now, d)
			rl.count(d)
			return d, nil
		}
		switch {
		case ctx.Err() != nil:
			// The request was cancelled, which says nothing about Redis.
			b.abandonProbe()
			return Decision{}, ctx.Err()
		case isNotSent(err):
			// Its time ran out in the edge's own queue, behind other
			// decisions for the same master: the master never saw it, so
			// it opens no breaker (docs/ratelimit.md, "Outages"). The
			// decisions in flight ahead of it report the master.
			b.abandonProbe()
			s.log.Debug("ratelimit: decision timed out before it was sent; applying on_error", "limit", rl.limit.Name, "error", err.Error())
		case IsKeyError(err):
			// Redis answered: only this bucket is affected, so Redis stays
			// in use for everybody else.
			b.report(s.log, nil, now)
			// Debug: a broken key would otherwise log once per request.
			s.log.Debug("ratelimit: redis refused a bucket; applying on_error", "limit", rl.limit.Name, "error", err.Error())
		default:
			b.report(s.log, err, now)
		}
	}
	if rl.errored != nil {
		rl.errored.Inc()
	}
	if st.deny {
		return Decision{}, errUnavailable
	}
	d, err := s.mem.Allow(ctx, key, rl.limit)
	if err == nil {
		rl.count(d)
	}
	return d, err
}

func (rl *routeLimit) count(d Decision) {
	c := rl.limited
	if d.Allowed {
		c = rl.allowed
	}
	if c != nil {
		c.Inc()
	}
}
