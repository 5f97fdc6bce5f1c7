package routes

import (
	"reflect"
	"strings"
	"time"
)

func reflectValue(f *File) reflect.Value { return reflect.ValueOf(f).Elem() }

// Defaults for keys left out of the file. They are documented in
// docs/routes.md; keep the two in step.
const (
	DefaultHTTPAddr          = ":8080"
	DefaultHTTPSAddr         = ":8443"
	DefaultAdminAddr         = "127.0.0.1:9901"
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultBodyReadTimeout   = 30 * time.Second
	DefaultWriteStallTimeout = 30 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultUpstreamTimeout   = 30 * time.Second
	DefaultConnectTimeout    = 5 * time.Second
	DefaultMaxIdlePerHost    = 512
	DefaultBalance           = "round_robin"
)

func (f *File) applyDefaults() {
	f.resolvePaths()
	if f.Listen.HTTP == "" && f.Listen.HTTPS == "" {
		f.Listen.HTTP = DefaultHTTPAddr
	}
	if f.TLS != nil && f.Listen.HTTPS == "" {
		f.Listen.HTTPS = DefaultHTTPSAddr
	}
	if f.Listen.Admin == "" {
		f.Listen.Admin = DefaultAdminAddr
	}
	s := &f.Server
	setDuration(&s.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	s.defaultBodyReadTimeout()
	setDuration(&s.IdleTimeout, DefaultIdleTimeout)
	setDuration(&s.ShutdownTimeout, DefaultShutdownTimeout)
	if s.MaxHeaderBytes == 0 {
		s.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if f.AccessLog.Output == "" {
		f.AccessLog.Output = "stdout"
	}
	if f.AccessLog.Sample == 0 {
		f.AccessLog.Sample = 1
	}
	for name, u := range f.Upstreams {
		if u.Balance == "" {
			u.Balance = DefaultBalance
		}
		if u.Scheme == "" {
			u.Scheme = "http"
		}
		setDuration(&u.Timeout, DefaultUpstreamTimeout)
		setDuration(&u.ConnectTimeout, DefaultConnectTimeout)
		if u.MaxIdlePerHost == 0 {
			u.MaxIdlePerHost = DefaultMaxIdlePerHost
		}
		f.Upstreams[name] = u
	}
	for i := range f.Routes {
		m := &f.Routes[i].Match
		m.Host = strings.ToLower(m.Host)
		for j, meth := range m.Methods {
			m.Methods[j] = strings.ToUpper(meth)
		}
	}
	if f.Mesh != nil && f.Mesh.CallerToken != nil {
		_, set := f.Positions["mesh.caller_token.cache"]
		f.Mesh.CallerToken.applyDefaults(set)
	}
	if k := f.Providers.Kubernetes; k != nil {
		if k.GatewayClass == "" {
			k.GatewayClass = DefaultGatewayClass
		}
		if k.InboundPort == 0 {
			k.InboundPort = DefaultSidecarInboundPort
		}
	}
	f.defaultTraffic()
	f.defaultTLS()
	f.defaultRedis()
	f.defaultAuthenticators()
	f.defaultRateLimits()
	f.defaultTracing()
}

func setDuration(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}

// defaultBodyReadTimeout sets body_read_timeout and write_stall_timeout
// when the file leaves them out; an explicit 0 stays (off).
func (s *Server) defaultBodyReadTimeout() {
	if s.BodyReadTimeout == nil {
		d := Duration(DefaultBodyReadTimeout)
		s.BodyReadTimeout = &d
	}
	if s.WriteStallTimeout == nil {
		d := Duration(DefaultWriteStallTimeout)
		s.WriteStallTimeout = &d
	}
}
