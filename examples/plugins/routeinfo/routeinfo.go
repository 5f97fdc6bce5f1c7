// Package routeinfo is an example out-of-tree Causeway plugin, "route_info":
// it tells the upstream which route a request came through, its request id,
// and who it was authenticated as, in headers the upstream can log.
//
// It shows the whole plugin contract: registration from init, strict config
// decoding with located errors, request info and the principal from the
// context, the JSON error helper, and Close for resources.
package routeinfo

import (
	"context"
	"net/http"
	"regexp"
	"sync/atomic"

	"github.com/causewayhq/causeway/auth"
	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

func init() { plugins.Register("route_info", New) }

// Config is the instance's config: section in the routes file.
type Config struct {
	// RouteHeader carries the route name (default X-Causeway-Route).
	RouteHeader string `yaml:"route_header"`
	// SubjectHeader carries the authenticated subject ("" leaves it out).
	SubjectHeader string `yaml:"subject_header"`
	// RequireSubject refuses unauthenticated requests with 401.
	RequireSubject bool `yaml:"require_subject"`
}

// RouteInfo is one configured instance.
type RouteInfo struct {
	routeHeader, subjectHeader string
	requireSubject             bool
	// served counts requests; Close reports it, as a stand-in for the
	// resources (connections, files) a real plugin would release.
	served atomic.Int64
	closed atomic.Bool
}

var headerRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// New is the plugin's factory: decode strictly, check, build. Every error
// comes from cfg.Decode or cfg.ErrorAt, so it names file:line:col.
func New(_ context.Context, cfg routes.Raw) (plugins.Instance, error) {
	var c Config
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	ri := &RouteInfo{routeHeader: "X-Causeway-Route", subjectHeader: c.SubjectHeader, requireSubject: c.RequireSubject}
	if c.RouteHeader != "" {
		ri.routeHeader = c.RouteHeader
	}
	if !headerRe.MatchString(ri.routeHeader) {
		return nil, cfg.ErrorAt("route_header", "%q is not a header name", ri.routeHeader)
	}
	if ri.subjectHeader != "" && !headerRe.MatchString(ri.subjectHeader) {
		return nil, cfg.ErrorAt("subject_header", "%q is not a header name", ri.subjectHeader)
	}
	if c.RequireSubject && ri.subjectHeader == "" {
		return nil, cfg.ErrorAt("require_subject", "require_subject needs subject_header")
	}
	return ri, nil
}

// Wrap is called once per route when the routes file loads.
func (ri *RouteInfo) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri.served.Add(1)
		info := plugins.Info(r.Context())
		// Never edit the caller's request in place.
		r = r.Clone(r.Context())
		r.Header.Set(ri.routeHeader, info.Route)
		if ri.subjectHeader != "" {
			// A client must not be able to claim a subject itself.
			r.Header.Del(ri.subjectHeader)
			if p := auth.FromContext(r.Context()); p != nil {
				r.Header.Set(ri.subjectHeader, p.Subject)
			} else if ri.requireSubject {
				plugins.Error(w, r, http.StatusUnauthorized, "authentication required")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Close is called once when a reload drops the instance or the edge stops.
func (ri *RouteInfo) Close() error {
	ri.closed.Store(true)
	return nil
}

// Served returns how many requests the instance handled.
func (ri *RouteInfo) Served() int64 { return ri.served.Load() }
