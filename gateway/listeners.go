package gateway

import (
	"net"
	"net/http"
	"strings"

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
		out = append(out, dataServer{srv: newDataServer(e.log, f.Server, engine, serverSpec{h2c: true, handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !redirect && !strings.HasPrefix(r.URL.Path, acmeChallengePrefix) {
				e.ServeHTTP(w, r)
				return
			}
			tf.handlers(e, httpsPort).http.ServeHTTP(w, r)
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
