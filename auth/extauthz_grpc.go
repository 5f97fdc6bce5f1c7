package auth

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxAuthzMessage bounds a CheckResponse: headers and a denial body are
// bounded further, this keeps a hostile server from making the edge
// allocate for a huge message before those checks run.
const maxAuthzMessage = 1 << 20

// reconnect is how the client retries a server it lost. grpc-go's default
// backs off to 2 minutes: an authorization server back after a restart
// of some seconds went unasked, every request answered on_error, for up to
// that long. Envoy asks again with the next request. Attempts at most a
// second apart cost a refused connection each while the server is down.
var reconnect = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   time.Second,
	},
	MinConnectTimeout: 5 * time.Second,
}

// grpcAuthz asks an envoy.service.auth.v3.Authorization server.
type grpcAuthz struct {
	conn   *grpc.ClientConn
	client authv3.AuthorizationClient
}

func newGRPCAuthz(addr string, useTLS bool, conf *tls.Config) (*grpcAuthz, error) {
	creds := insecure.NewCredentials()
	if useTLS {
		creds = credentials.NewTLS(conf)
	}
	// NewClient connects lazily: a server down at load is an on_error
	// matter for requests, not a refused configuration.
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(reconnect),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxAuthzMessage)))
	if err != nil {
		return nil, fmt.Errorf("grpc_address: %w", err)
	}
	return &grpcAuthz{conn: conn, client: authv3.NewAuthorizationClient(conn)}, nil
}

func (g *grpcAuthz) kind() string { return "grpc" }
func (g *grpcAuthz) close()       { _ = g.conn.Close() }

// checkRequest is the request as Envoy describes it to an ext_authz
// server, so that existing servers and policies read it unchanged.
func checkRequest(in *checkInput, now *timestamppb.Timestamp) *authv3.CheckRequest {
	r := in.r
	sent := in.withPartialBody()
	headers := make(map[string]string, len(sent)+4)
	for k, vs := range sent {
		headers[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	// Envoy sends the HTTP/2 pseudo-headers too; policies read them.
	headers[":authority"] = r.Host
	headers[":method"] = r.Method
	headers[":path"] = r.URL.RequestURI()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	headers[":scheme"] = scheme
	httpReq := &authv3.AttributeContext_HttpRequest{
		Id:       r.Header.Get("X-Request-Id"),
		Method:   r.Method,
		Headers:  headers,
		Path:     r.URL.RequestURI(),
		Host:     r.Host,
		Scheme:   scheme,
		Query:    r.URL.RawQuery,
		Size:     r.ContentLength,
		Protocol: r.Proto,
	}
	if in.body != nil {
		httpReq.Body = string(in.body)
		httpReq.RawBody = in.body
	}
	var source *authv3.AttributeContext_Peer
	if in.clientIP != "" {
		source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: in.clientIP},
		}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  source,
		Request: &authv3.AttributeContext_Request{Time: now, Http: httpReq},
	}}
}

func (g *grpcAuthz) check(ctx context.Context, in *checkInput) (*decision, error) {
	req := checkRequest(in, timestamppb.New(in.now))
	md := metadata.MD{}
	injectTrace(ctx, grpcCarrier(md))
	resp, err := g.client.Check(metadata.NewOutgoingContext(ctx, md), req)
	if err != nil {
		return nil, fmt.Errorf("ext_authz Check: %w", err)
	}
	sink := &headerSink{}
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		d := &decision{allow: true, set: http.Header{}, add: http.Header{}}
		ok := resp.GetOkResponse()
		for _, o := range ok.GetHeaders() {
			k, accepted := sink.accept(o.GetHeader().GetKey(), headerValue(o.GetHeader()), true)
			if !accepted {
				continue
			}
			// Envoy: in an OK response append defaults to false, so a
			// header replaces the client's. append is deprecated in favour
			// of append_action, whose zero value cannot say "unset": Envoy
			// still honours append, and servers still send it.
			if o.GetAppend().GetValue() { //nolint:staticcheck // see above
				d.add[k] = append(d.add[k], headerValue(o.GetHeader()))
			} else {
				d.set[k] = []string{headerValue(o.GetHeader())}
			}
		}
		for _, name := range ok.GetHeadersToRemove() {
			if k, accepted := sink.accept(name, "", true); accepted {
				d.remove = append(d.remove, k)
			}
		}
		if sink.err != nil {
			return nil, sink.err
		}
		meta := resp.GetDynamicMetadata()
		if meta == nil {
			meta = ok.GetDynamicMetadata() //nolint:staticcheck // deprecated, still sent by older servers
		}
		if meta != nil {
			d.claims = meta.AsMap()
		}
		return d, nil
	}
	if resp.GetErrorResponse() != nil {
		return nil, fmt.Errorf("ext_authz Check: the server reported an error (status %d)", resp.GetStatus().GetCode())
	}
	denied := resp.GetDeniedResponse()
	d := &decision{status: denialStatus(int(denied.GetStatus().GetCode())), header: http.Header{}}
	for _, o := range denied.GetHeaders() {
		if k, accepted := sink.accept(o.GetHeader().GetKey(), headerValue(o.GetHeader()), false); accepted {
			if o.GetAppend().GetValue() { //nolint:staticcheck // as for OK headers
				d.header[k] = append(d.header[k], headerValue(o.GetHeader()))
			} else {
				d.header[k] = []string{headerValue(o.GetHeader())}
			}
		}
	}
	if sink.err != nil {
		return deniedOverBounds(d.status), sink.err
	}
	if len(denied.GetBody()) > maxAuthzBodyBytes {
		return deniedOverBounds(d.status), fmt.Errorf("the authorization server's denial body is over %d bytes", maxAuthzBodyBytes)
	}
	d.body = []byte(denied.GetBody())
	return d, nil
}

// headerValue is a HeaderValue's value, whichever field carries it.
func headerValue(h *corev3.HeaderValue) string {
	if v := h.GetRawValue(); len(v) > 0 {
		return string(v)
	}
	return h.GetValue()
}

// grpcCarrier lets the trace propagator write gRPC metadata.
type grpcCarrier metadata.MD

func (c grpcCarrier) Get(k string) string {
	if vs := metadata.MD(c).Get(k); len(vs) > 0 {
		return vs[0]
	}
	return ""
}
func (c grpcCarrier) Set(k, v string) { metadata.MD(c).Set(k, v) }
func (c grpcCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}
