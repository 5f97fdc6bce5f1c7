package h1server

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// h2Server is net/http's HTTP/2 server with connections handed to it one
// at a time: a TLS connection that negotiated "h2", or a plain one that
// opened with the client preface (its bytes already read are replayed).
type h2Server struct {
	srv *http.Server
	ln  *handoffListener
}

// newStdServer is the net/http server with this server's settings: it
// serves the connections that speak HTTP/2, and it is what handlers find
// under http.ServerContextKey (httputil.ReverseProxy looks there to tell
// that it runs in a server, and then aborts a response whose upstream
// body breaks instead of ending it as if complete).
func (s *Server) newStdServer() *http.Server {
	var p http.Protocols
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: s.ReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		WriteTimeout:      s.WriteTimeout,
		IdleTimeout:       s.IdleTimeout,
		MaxHeaderBytes:    s.MaxHeaderBytes,
		ErrorLog:          s.ErrorLog,
		Protocols:         &p,
	}
}

// h2server returns the HTTP/2 server, started on first use when create is
// set (nil otherwise, or when the server is closing).
func (s *Server) h2server(create bool) *h2Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h2 != nil || !create || s.shutting.Load() {
		return s.h2
	}
	ln := &handoffListener{conns: make(chan net.Conn), done: make(chan struct{})}
	s.h2 = &h2Server{srv: s.std, ln: ln}
	go func() { _ = s.std.Serve(ln) }()
	return s.h2
}

// serveH2 hands c to the HTTP/2 server; false when the server is closing
// (c is then closed).
func (s *Server) serveH2(c net.Conn) bool {
	h2 := s.h2server(true)
	if h2 == nil {
		c.Close()
		return false
	}
	select {
	case h2.ln.conns <- c:
		return true
	case <-h2.ln.done:
		c.Close()
		return false
	}
}

// handoffListener is the HTTP/2 server's listener: Accept returns the
// connections handed over.
type handoffListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return &net.TCPAddr{} }

// replayConn is a connection whose first bytes were already read into br:
// reads come from br until it is empty, then from the connection.
type replayConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

// h2Preface is what an HTTP/2 client sends first (RFC 9113 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
