package gateway

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/pipeline"
	"github.com/causewayhq/causeway/routes"
)

// dataServers builds the servers of the http and https listeners. With tls
// set, the http listener answers ACME HTTP-01 challenges and redirects the
// rest to https.
func (e *Edge) dataServers(f *routes.File, lns []net.Listener, engine string) []dataServer {
	httpLn, httpsLn := lns[0], lns[1]
	var out []dataServer
	tf := e.tls()
	if tf == nil || tf.manager() == nil {
		if httpLn != nil {
			out = append(out, dataServer{srv: newDataServer(e.log, f.Server, engine, serverSpec{handler: e, h2c: true}), ln: httpLn})
		}
		return out
	}
	_, httpsPort, _ := net.SplitHostPort(listenerAddr(httpsLn))
	if httpLn != nil {
		redirect := f.TLS.RedirectHTTP == nil || *f.TLS.RedirectHTTP
		srv := f.Server
		out = append(out, dataServer{srv: newDataServer(e.log, f.Server, engine, serverSpec{h2c: true, handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, acmeChallengePrefix) && (!redirect || e.forwardedHTTPS(r)) {
				e.ServeHTTP(w, r)
				return
			}
			answerWithoutBody(w, r, &srv, tf.handlers(e, httpsPort).http)
		})}), ln: httpLn})
	}
	if httpsLn != nil {
		srv := newDataServer(e.log, f.Server, engine, serverSpec{tls: tf.config(), handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tf.handlers(e, httpsPort).https.ServeHTTP(w, r)
		})})
		out = append(out, dataServer{srv: srv, ln: httpsLn, tls: true})
	}
	return out
}

// forwardedHTTPS reports whether r comes from a trusted proxy that says
// the client spoke https to it: a load balancer that ends TLS and forwards
// plain HTTP with X-Forwarded-Proto: https (or Forwarded proto=https).
// Redirecting it to https would send the client back to the same place,
// a loop; it is served, as Traefik's redirectScheme and Kong's
// https_redirect_status_code serve it. An untrusted client saying so, two
// statements that disagree, or one that is malformed, are redirected.
func (e *Edge) forwardedHTTPS(r *http.Request) bool {
	g := e.live.Load()
	if g == nil || len(g.rts) == 0 {
		return false
	}
	if pipeline.NominatesPresent(r.Header) {
		// A header the Connection header nominates is dropped as
		// hop-by-hop before the request is served (runtime.serve): the
		// decision to serve it is taken on the request as served, or a
		// proxy's "Connection: X-Forwarded-Proto" would have the edge
		// believe a scheme the upstream never hears of.
		r = r.Clone(r.Context())
		pipeline.DropHopByHop(r.Header)
	}
	pi := g.rts[0].trust.Resolve(r)
	return pi.ForwardedScheme(r) == "https"
}

// withH2C lets a plain listener speak HTTP/2 with prior knowledge (h2c) next
// to HTTP/1.1, so gRPC clients can reach the edge without TLS.
func withH2C(srv *http.Server) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	return srv
}

// acmeChallengePrefix is where ACME HTTP-01 challenges are served (RFC 8555 §8.3).
const acmeChallengePrefix = "/.well-known/acme-challenge/"

func (e *Edge) tls() *tlsFeature {
	for _, ft := range e.features {
		if t, ok := ft.(*tlsFeature); ok {
			return t
		}
	}
	return nil
}

// answerWithoutBody serves r with h, an answer that needs none of the
// request's body (the redirect to https, an ACME challenge), under the
// body rules of every other answer the edge gives itself (runtime.serve):
// the answer goes out at once with Connection: close when the body has
// not all arrived, and what is left of it is read within
// body_read_timeout and a lingering close. Without them the server reads
// the rest of a body under 256 KiB before it writes the answer, with no
// deadline: a client that stalls its body (or waits for 100 Continue)
// never gets its 308 and holds the connection and its goroutine forever.
func answerWithoutBody(w http.ResponseWriter, r *http.Request, srv *routes.Server, h http.Handler) {
	if r.Body == nil || r.Body == http.NoBody {
		h.ServeHTTP(w, r)
		return
	}
	st := &reqState{start: time.Now()}
	st.rec.ResponseWriter = w
	if r.ProtoMajor == 1 {
		// As in runtime.serve: the server must not read the body itself
		// as the head goes out; settleEarly and endBody bound that read.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	r.Body = st.wrapBody(w, r, srv)
	defer st.body.finish()
	h.ServeHTTP(&st.rec, r)
	st.endBody()
}
