// Package h1server is the server side of the edge's own HTTP/1.1 engine: one
// goroutine per connection over net.Conn or crypto/tls, request heads read by
// h1.Parse (strict RFC 9112) and handed to an ordinary http.Handler, so the
// handler chain and the plugin API stay what they are under net/http.
//
// HTTP/2 is not spoken here: a TLS connection that negotiates "h2", and a
// plain one that opens with the HTTP/2 preface (h2c prior knowledge), are
// handed to a net/http server that speaks only HTTP/2.
//
// The timeouts mean what net/http.Server's fields of the same names mean, and
// what the package does not know how to read safely it refuses (400, 414,
// 431, 501, 505) and closes the connection.
package h1server

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/h1"
)

// Server serves HTTP/1.x on the connections of its listeners. Set the fields
// before Serve; they are read, never written, while it serves.
type Server struct {
	Handler http.Handler
	// TLSConfig is used by ServeTLS. "h2" and "http/1.1" are offered (in
	// that order) when it lists no protocols.
	TLSConfig *tls.Config
	// The timeouts of net/http.Server: ReadHeaderTimeout bounds reading a
	// request head (ReadTimeout when 0), ReadTimeout the whole request,
	// head and body, WriteTimeout the time from the end of the head to the
	// end of the response, IdleTimeout the wait for the next request
	// (ReadTimeout when 0). Zero: no limit.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// MaxHeaderBytes bounds a request head, request line included (431
	// beyond). 0: 1 MiB, net/http's default.
	MaxHeaderBytes int
	// H2C serves HTTP/2 with prior knowledge on plain connections.
	H2C bool
	// ErrorLog receives handler panics and protocol errors (nil: the log
	// package's standard logger).
	ErrorLog *log.Logger

	mu  sync.Mutex
	std *http.Server // see newStdServer
	// baseCtx carries http.ServerContextKey, the parent of every
	// connection's context; lim is the limits of request heads. Both are
	// set by init.
	baseCtx   context.Context
	lim       h1.Limits
	listeners map[*net.Listener]struct{}
	conns     connSet
	h2        *h2Server
	shutting  atomic.Bool
	// closed is closed when Shutdown or Close starts: conns stop keeping
	// alive and Serve loops return ErrServerClosed.
	closedOnce sync.Once
	closed     chan struct{}

	// pk holds parked idle connections (park_linux.go), made at the first
	// park; pkFailed: it could not be made, connections wait on their
	// goroutines.
	pk       *parker
	pkFailed bool
	// For tests and benchmarks: noPark keeps every idle connection on its
	// goroutine; parkAfter replaces defaultParkAfter (negative: park at
	// once).
	noPark    bool
	parkAfter time.Duration
}

// maxRequestLine bounds a request line (414 beyond): above any URL a client
// or proxy in front of the edge sends, far below a head.
const maxRequestLine = 8 << 10

func (s *Server) limits() h1.Limits { return Limits(s.MaxHeaderBytes) }

// Limits are the request-head limits the engine serves with for a
// MaxHeaderBytes (0: net/http's default); what it refuses beyond them
// (414, 431) the deprecated net/http engine refuses the same way.
func Limits(maxHeaderBytes int) h1.Limits {
	lim := h1.DefaultLimits
	lim.MaxRequestLine = maxRequestLine
	lim.MaxHeaderBytes = maxHeaderBytes
	if lim.MaxHeaderBytes <= 0 {
		lim.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	lim.MaxRequestLine = min(lim.MaxRequestLine, lim.MaxHeaderBytes)
	return lim
}

func (s *Server) init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed == nil {
		s.closed = make(chan struct{})
		s.listeners = map[*net.Listener]struct{}{}
		s.std = s.newStdServer()
		s.baseCtx = context.WithValue(context.Background(), http.ServerContextKey, s.std)
		s.lim = s.limits()
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// Serve accepts connections on ln and serves each on its own goroutine. It
// returns http.ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, nil) }

// ServeTLS serves TLS on ln with s.TLSConfig. certFile and keyFile, when
// set, are loaded as net/http.Server.ServeTLS loads them.
func (s *Server) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	cfg := &tls.Config{}
	if s.TLSConfig != nil {
		cfg = s.TLSConfig.Clone()
	}
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	return s.serve(ln, cfg)
}

func (s *Server) serve(ln net.Listener, cfg *tls.Config) error {
	s.init()
	if !s.trackListener(&ln, true) {
		return http.ErrServerClosed
	}
	defer s.trackListener(&ln, false)
	var delay time.Duration
	for {
		rw, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			// net/http's accept back-off, for EMFILE and the like.
			var te temporary
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logf("h1server: accept error: %v; retrying in %v", err, delay)
				select {
				case <-time.After(delay):
				case <-s.closed:
				}
				continue
			}
			return err
		}
		delay = 0
		c := s.newConn(rw)
		if !s.trackConn(c, true) {
			rw.Close()
			return http.ErrServerClosed
		}
		go c.serve(cfg)
	}
}

// temporary is what net/http asks of an accept error it retries.
type temporary interface{ Temporary() bool }

func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutting.Load() {
			return false
		}
		s.listeners[ln] = struct{}{}
		return true
	}
	delete(s.listeners, ln)
	return true
}

func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutting.Load() {
			return false
		}
		s.conns.add(c)
		return true
	}
	s.conns.remove(c)
	return true
}

// shutdownPoll is how often Shutdown looks for connections that went idle.
const shutdownPoll = 10 * time.Millisecond

// Shutdown stops accepting, closes idle connections, lets active ones finish
// their request (their response says Connection: close), and returns when
// none is left or ctx ends (then with ctx's error; Close cuts the rest).
// HTTP/2 connections get a GOAWAY and drain the same way.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.startClosing()
	var h2err chan error
	if h2 := s.h2server(false); h2 != nil {
		h2err = make(chan error, 1)
		go func() { h2err <- h2.srv.Shutdown(ctx) }()
	}
	tick := time.NewTicker(shutdownPoll)
	defer tick.Stop()
	for !s.closeIdle() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	if h2err != nil {
		return <-h2err
	}
	return nil
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.init()
	s.startClosing()
	s.mu.Lock()
	for _, c := range s.conns {
		c.netc.Close()
		c.connIndex = -1
	}
	clear(s.conns)
	s.conns = s.conns[:0]
	s.mu.Unlock()
	if h2 := s.h2server(false); h2 != nil {
		return h2.srv.Close()
	}
	return nil
}

func (s *Server) startClosing() {
	s.mu.Lock()
	s.shutting.Store(true)
	for ln := range s.listeners {
		(*ln).Close()
		delete(s.listeners, ln)
	}
	pk := s.pk
	s.mu.Unlock()
	s.closedOnce.Do(func() { close(s.closed) })
	if pk != nil {
		// Every parked connection goes back to a goroutine, which sees
		// the server closing and closes it: only a connection's
		// goroutine closes it once it has been parked (park_linux.go).
		pk.close()
	}
}

// parker returns the server's parker, made at the first call; nil when the
// server is closing or there is none on this platform.
func (s *Server) parker() *parker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return nil
	}
	if s.pk == nil && !s.pkFailed {
		pk, err := newParker(time.Now)
		if err != nil {
			s.pkFailed = true
			return nil
		}
		s.pk = pk
	}
	return s.pk
}

// closeIdle closes the connections waiting for a request (and those
// accepted that have sent nothing for a while) and says whether none is
// left. Connections handed to the HTTP/2 server are its to drain.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Backwards: a removal moves the last connection, already looked
	// at, into the hole.
	for i := len(s.conns) - 1; i >= 0; i-- {
		if c := s.conns[i]; c.closeIfIdle() {
			s.conns.remove(c)
		}
	}
	return len(s.conns) == 0
}

// connSet is the server's open connections: a slice, each connection
// knowing its place (connIndex), so that one costs 8 bytes here rather
// than a map entry's 30-40.
type connSet []*conn

func (cs *connSet) add(c *conn) {
	c.connIndex = int32(len(*cs))
	*cs = append(*cs, c)
}

// remove takes c out; a connection not in the set is left alone (a
// hijacked one is removed twice).
func (cs *connSet) remove(c *conn) {
	i := int(c.connIndex)
	if i < 0 || i >= len(*cs) || (*cs)[i] != c {
		return
	}
	last := len(*cs) - 1
	moved := (*cs)[last]
	(*cs)[i] = moved
	moved.connIndex = int32(i)
	(*cs)[last] = nil
	*cs = (*cs)[:last]
	c.connIndex = -1
	if cap(*cs) > 64 && len(*cs) < cap(*cs)/4 {
		// Give back what a burst of connections grew.
		*cs = append(connSet(nil), *cs...)
	}
}
