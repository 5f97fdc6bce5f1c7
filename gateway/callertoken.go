package gateway

import (
	"github.com/causewayhq/causeway/gateway/internal/proxy"

	"errors"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causewayhq/causeway/auth"
	"github.com/causewayhq/causeway/internal/edgeheader"
	"github.com/causewayhq/causeway/internal/httperr"
	"github.com/causewayhq/causeway/mesh"
	"github.com/causewayhq/causeway/mesh/caller"
	"github.com/causewayhq/causeway/routes"
)

// Caller tokens (mesh/caller, docs/mesh.md): the edge mints one for each
// request it sends to a mesh upstream; a sidecar verifies the ones it
// receives, applies its rules, hands the principal to its service as
// headers, and exchanges a token its service passes on for one addressed
// to the next service.

// The headers a sidecar sets for its service from a verified token; every
// header with the prefix is removed from what callers send.
const (
	callerSubjectHeader = routes.CallerHeaderPrefix + "Subject"
	callerIssuerHeader  = routes.CallerHeaderPrefix + "Issuer"
	callerAuthnHeader   = routes.CallerHeaderPrefix + "Authenticator"
	callerAnonHeader    = routes.CallerHeaderPrefix + "Anonymous"
	callerChainHeader   = routes.CallerHeaderPrefix + "Chain"
	callerReqIDHeader   = routes.CallerHeaderPrefix + "Request-Id"
)

// callerSend puts a caller token on requests to one kind of upstream: the
// edge's (mint from the authenticated principal) or a sidecar's outbound
// side (exchange the token the service passed on).
type callerSend struct {
	header string
	// token returns the token for r addressed to aud, "" for none.
	token func(r *http.Request, aud mesh.ID) (string, error)
}

// stripCaller only removes client copies of the default token header: an
// edge without caller tokens, a sidecar that does not exchange them.
var stripCaller = &callerSend{header: routes.DefaultCallerHeader}

// edgeCallerSend mints tokens for f's mesh upstreams with src's SVID. The
// token carries what the edge forwards of a principal: the claims named in
// forward_claims and the values of the headers its authenticators set
// (as they set them: auth.ForwardedFromContext).
func edgeCallerSend(f *routes.File, src caller.SVIDSource, now func() time.Time) *callerSend {
	ct := f.Mesh.CallerToken
	m := caller.NewMinter(src, caller.MintOptions{Lifetime: ct.Lifetime.D(), CacheFor: ct.CacheFor(), Now: now})
	claimNames, headerNames := forwardedByAuthenticators(f)
	return &callerSend{header: ct.Header, token: func(r *http.Request, aud mesh.ID) (string, error) {
		return m.Mint(principalOf(r, claimNames, headerNames), aud)
	}}
}

// forwardedByAuthenticators are the claims named in f's authenticators'
// forward_claims and the headers they state for the upstream, sorted: of
// every kind, since a sidecar listing a header in inbound.callers.headers
// gives its service that header from a verified token only, and one left
// out of the token never reaches it (basic's forward_user, ext_authz's
// upstream_headers, an OIDC session's claims arrived as nobody's).
func forwardedByAuthenticators(f *routes.File) (claimNames, headerNames []string) {
	claims, headers := map[string]bool{}, map[string]bool{}
	forward := func(fc map[string]string, hs ...string) {
		for c, h := range fc {
			claims[c], headers[http.CanonicalHeaderKey(h)] = true, true
		}
		for _, h := range hs {
			if h != "" {
				headers[http.CanonicalHeaderKey(h)] = true
			}
		}
	}
	for _, a := range f.Authenticators {
		if a.JWT != nil {
			forward(a.JWT.ForwardClaims)
		}
		if a.OIDC != nil {
			forward(a.OIDC.ForwardClaims)
		}
		if a.ExtAuthz != nil {
			forward(a.ExtAuthz.ForwardClaims, a.ExtAuthz.UpstreamHeaders...)
		}
		if a.Basic != nil {
			forward(nil, a.Basic.ForwardUser)
		}
		if a.APIKey != nil {
			forward(nil, a.APIKey.ForwardName)
		}
	}
	return slices.Sorted(maps.Keys(claims)), slices.Sorted(maps.Keys(headers))
}

// principalOf is the caller-token principal of a request at the edge.
func principalOf(r *http.Request, claims, headers []string) caller.Principal {
	p := caller.Principal{RequestID: r.Header.Get(httperr.RequestIDHeader)}
	ap := auth.FromContext(r.Context())
	if ap == nil {
		p.Anonymous = true
		return p
	}
	p.Subject, p.Authenticator = ap.Subject, ap.Authenticator
	if iss, ok := ap.Claims["iss"].(string); ok {
		p.Issuer = iss
	}
	for _, c := range claims {
		if v, ok := ap.Claims[c]; ok {
			if p.Claims == nil {
				p.Claims = map[string]any{}
			}
			p.Claims[c] = v
		}
	}
	// The values the authenticator set, not the request's: a route's
	// headers plugin or filter may have rewritten those since, and the
	// token vouches for the caller to every hop after this one.
	fwd := auth.ForwardedFromContext(r.Context())
	for _, h := range headers {
		if v := fwd.Get(h); v != "" {
			if p.Headers == nil {
				p.Headers = map[string]string{}
			}
			p.Headers[h] = v
		}
	}
	return p
}

// setCallerToken replaces whatever r carries in the token header with the
// token for u (none for an upstream outside the mesh). false: the answer
// was written.
func setCallerToken(w http.ResponseWriter, r *http.Request, cs *callerSend, u *proxy.Upstream) bool {
	if cs == nil {
		return true
	}
	dropTrailers(r, cs.header)
	// And the spellings with '_' (Causeway_Caller), which only
	// server.allow_underscore_headers lets in: a CGI-style service (CGI,
	// WSGI, PHP) reads one as the same variable as the token header, so a
	// client's copy would reach an upstream outside the mesh as a token
	// (a sidecar removes them itself).
	for k := range r.Header {
		if strings.IndexByte(k, '_') >= 0 && foldName(k) == foldName(cs.header) {
			delete(r.Header, k)
		}
	}
	if cs.token == nil || u.MeshID.IsZero() {
		r.Header.Del(cs.header)
		return true
	}
	tok, err := cs.token(r, u.MeshID)
	if err != nil {
		var ce *caller.Error
		if errors.As(err, &ce) {
			// The token the local service passed on is refused: say so
			// rather than send the request on as if no one had called.
			httperr.Write(w, r, http.StatusUnauthorized, "caller token refused: "+ce.Reason)
			return false
		}
		httperr.Write(w, r, http.StatusServiceUnavailable, "no caller token: the workload identity is not ready")
		return false
	}
	if tok == "" {
		r.Header.Del(cs.header)
	} else {
		r.Header.Set(cs.header, tok)
	}
	return true
}

// sidecarCallers is a sidecar's inbound caller check: the verifier, the
// rules and the headers it owns.
type sidecarCallers struct {
	cfg      *routes.InboundCallers // nil: tokens are not verified, only removed
	verifier *caller.Verifier
	policy   *caller.Policy
	header   string
	owned    []string // forwarded header names only a verified token sets
	// ownedFolded is owned and the token header folded as CGI-style
	// servers fold names (case, '_' as '-'): see check.
	ownedFolded map[string]bool
	counts      *prometheus.CounterVec
	log         *slog.Logger
}

func newSidecarCallers(in *routes.Inbound, src *mesh.Source, replay *caller.ReplayCache, counts *prometheus.CounterVec, log *slog.Logger, now func() time.Time) (*sidecarCallers, error) {
	// Even without callers the token header's CGI-style spellings go (see
	// check): the sidecar verified no token, so the service gets none.
	sc := &sidecarCallers{header: routes.DefaultCallerHeader, counts: counts, log: log,
		ownedFolded: map[string]bool{foldName(routes.DefaultCallerHeader): true}}
	var err error
	if sc.policy, err = caller.NewPolicy(in.Rules); err != nil {
		return nil, err
	}
	cl := in.Callers
	if cl == nil {
		return sc, nil
	}
	issuers := make([]mesh.ID, 0, len(cl.Issuers))
	for _, s := range cl.Issuers {
		id, err := mesh.ParseID(s)
		if err != nil {
			return nil, err
		}
		issuers = append(issuers, id)
	}
	sc.cfg, sc.header, sc.owned = cl, cl.Header, cl.Headers
	sc.ownedFolded = map[string]bool{foldName(cl.Header): true}
	for _, k := range cl.Headers {
		sc.ownedFolded[foldName(k)] = true
	}
	sc.verifier = caller.NewVerifier(src, caller.VerifyOptions{
		Self: src.ID, Issuers: issuers, MaxHops: *cl.MaxHops, Skew: cl.ClockSkew.D(),
		MaxLifetime: cl.MaxLifetime.D(), Replay: cl.Replay, ReplayCache: replay, Now: now,
	})
	return sc, nil
}

// check verifies r's token from peer and applies the rules. On success it
// sets the principal's headers for the service and returns the verified
// token (nil: none); false means the refusal was written.
func (sc *sidecarCallers) check(w http.ResponseWriter, r *http.Request, peer mesh.ID) (*caller.Verified, bool) {
	h := r.Header
	for k := range h {
		if strings.HasPrefix(k, routes.CallerHeaderPrefix) {
			delete(h, k)
		}
	}
	for _, k := range sc.owned {
		delete(h, k)
	}
	// And under the names a CGI-style service (CGI, WSGI, PHP) reads as
	// the same variable: X_User_Id is HTTP_X_USER_ID, as X-User-Id is.
	// They arrive only under server.allow_underscore_headers, and would
	// otherwise reach the service beside the verified value, or alone.
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 && sc.ownedFolded[foldName(k)] {
			delete(h, k)
		}
	}
	// The same names after the body: only a verified token states them.
	dropTrailers(r, sc.header)
	dropTrailers(r, sc.owned...)
	tok := h.Get(sc.header)
	var v *caller.Verified
	switch {
	case sc.cfg != nil && len(h.Values(sc.header)) > 1:
		// Verifying one and passing the other on would hand the service
		// a token no one checked.
		sc.counts.WithLabelValues("inbound", caller.ReasonMalformed).Inc()
		httperr.Write(w, r, http.StatusUnauthorized, "caller token refused: more than one")
		return nil, false
	case sc.cfg == nil:
		h.Del(sc.header) // not verified here, so not passed on
	case tok == "" && sc.cfg.Require:
		sc.counts.WithLabelValues("inbound", "missing").Inc()
		httperr.Write(w, r, http.StatusUnauthorized, "caller token required")
		return nil, false
	case tok != "":
		var err error
		if v, err = sc.verifier.Verify(tok, peer); err != nil {
			reason := "error"
			var ce *caller.Error
			if errors.As(err, &ce) {
				reason = ce.Reason
			}
			sc.counts.WithLabelValues("inbound", reason).Inc()
			// The reason, never the token.
			sc.log.Info("caller token refused", "peer", peer.String(), "reason", reason, "error", err.Error())
			httperr.Write(w, r, http.StatusUnauthorized, "caller token refused: "+reason)
			return nil, false
		}
	}
	if d := sc.policy.Decide(r, peer, v); d != nil {
		sc.counts.WithLabelValues("inbound", "rule_"+strconv.Itoa(d.Status)).Inc()
		sc.log.Info("request refused by an inbound rule", "peer", peer.String(), "rule", d.Rule, "reason", d.Reason)
		httperr.Write(w, r, d.Status, d.Reason)
		return nil, false
	}
	if v == nil {
		return nil, true
	}
	sc.counts.WithLabelValues("inbound", "ok").Inc()
	p := v.Principal
	if p.Anonymous {
		h.Set(callerAnonHeader, "true")
	} else {
		setIf(h, callerSubjectHeader, p.Subject)
		setIf(h, callerIssuerHeader, p.Issuer)
		setIf(h, callerAuthnHeader, p.Authenticator)
	}
	setIf(h, callerReqIDHeader, p.RequestID)
	chain := make([]string, len(v.Chain))
	for i, id := range v.Chain {
		chain[i] = id.String()
	}
	h.Set(callerChainHeader, strings.Join(chain, ","))
	for _, k := range sc.owned {
		setIf(h, k, p.Headers[k])
	}
	return v, true
}

// foldName is name as a CGI-style server reads it: case and '_' versus
// '-' do not count.
func foldName(name string) string {
	b := []byte(name)
	for i := range b {
		b[i] = edgeheader.FoldByte(b[i])
	}
	return string(b)
}

func setIf(h http.Header, k, v string) {
	if v != "" && validHeaderValue(v) {
		h.Set(k, v)
	}
}

// validHeaderValue: a signed value is still refused if it could split a
// header (the edge never mints one, but the check costs nothing).
func validHeaderValue(v string) bool {
	return !strings.ContainsAny(v, "\r\n\x00")
}

// sidecarExchange is a sidecar's outbound side: the token the local
// service passed on, verified as addressed to this workload, becomes one
// for the service called.
func sidecarExchange(in *routes.InboundCallers, out *routes.CallerToken, src *mesh.Source, counts *prometheus.CounterVec, now func() time.Time) (*callerSend, error) {
	issuers := make([]mesh.ID, 0, len(in.Issuers))
	for _, s := range in.Issuers {
		id, err := mesh.ParseID(s)
		if err != nil {
			return nil, err
		}
		issuers = append(issuers, id)
	}
	v := caller.NewVerifier(src, caller.VerifyOptions{
		Self: src.ID, Issuers: issuers, MaxHops: *in.MaxHops, Skew: in.ClockSkew.D(), MaxLifetime: in.MaxLifetime.D(), Now: now,
	})
	m := caller.NewMinter(src, caller.MintOptions{Lifetime: out.Lifetime.D(), CacheFor: out.CacheFor(), Now: now})
	return &callerSend{header: out.Header, token: func(r *http.Request, aud mesh.ID) (string, error) {
		tok := r.Header.Get(out.Header)
		if tok == "" {
			return "", nil // the service passed none on: the callee sees a direct call
		}
		got, err := v.Verify(tok, mesh.ID{})
		if err != nil {
			var ce *caller.Error
			if errors.As(err, &ce) {
				counts.WithLabelValues("outbound", ce.Reason).Inc()
			}
			return "", err
		}
		counts.WithLabelValues("outbound", "exchanged").Inc()
		return m.Exchange(got, aud)
	}}, nil
}
