package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxOPAResponse bounds an OPA decision document.
const maxOPAResponse = 1 << 20

// httpAuthz asks over HTTP: a forward-auth endpoint (Traefik's
// forwardAuth contract) or, with opa set, OPA's data API with Envoy's
// CheckRequest as input (the contract of OPA's Envoy plugin, so the same
// Rego policy serves both).
type httpAuthz struct {
	url        string
	client     *http.Client
	upstream   []string          // canonical response headers copied upstream on allow
	claimsFrom map[string]string // canonical header -> claim
	opa        bool
}

// newHTTPAuthz builds the client on an http.Transport with the check's
// timeouts and TLS settings, which transport (Options.ExtAuthzTransport)
// may wrap, for rawURL's scheme, in one that reuses HTTP/1.1 connections
// safely. Without it the http.Transport keeps no connection after an
// answer: it pools a connection before it looks for bytes the server sent
// past its answer (a body after a 204, more than Content-Length, a
// response while idle), and the next check on that connection would read
// them as its own decision.
func newHTTPAuthz(rawURL string, conf *tls.Config, upstream []string, claimsFrom map[string]string, opa bool, transport func(string, *http.Transport) (http.RoundTripper, error)) (*httpAuthz, error) {
	tr := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:        conf,
		TLSHandshakeTimeout:    5 * time.Second,
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 2 * maxAuthzHeaderBytes,
		ForceAttemptHTTP2:      true,
	}
	var rt http.RoundTripper = tr
	if transport != nil {
		// Every check goes to rawURL (redirects are not followed), so
		// its scheme is the only one the client ever needs.
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, fmt.Errorf("ext_authz url: %w", err)
		}
		if rt, err = transport(u.Scheme, tr); err != nil {
			return nil, fmt.Errorf("ext_authz transport: %w", err)
		}
	} else {
		tr.DisableKeepAlives = true
	}
	return &httpAuthz{
		url: rawURL,
		client: &http.Client{
			Transport: rt,
			// A redirect is the server's answer to the client (a login
			// page), never something the edge follows.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		upstream:   upstream,
		claimsFrom: claimsFrom,
		opa:        opa,
	}, nil
}

func (h *httpAuthz) kind() string {
	if h.opa {
		return "opa"
	}
	return "http"
}

func (h *httpAuthz) close() { h.client.CloseIdleConnections() }

func (h *httpAuthz) check(ctx context.Context, in *checkInput) (*decision, error) {
	if h.opa {
		return h.checkOPA(ctx, in)
	}
	return h.forwardAuth(ctx, in)
}

// forwardAuth sends the request's headers with X-Forwarded-Method, -Proto,
// -Host, -Uri and -For, as Traefik does; 2xx allows.
func (h *httpAuthz) forwardAuth(ctx context.Context, in *checkInput) (*decision, error) {
	var body io.Reader
	if in.body != nil {
		body = bytes.NewReader(in.body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, body)
	if err != nil {
		return nil, fmt.Errorf("ext_authz request: %w", err)
	}
	for k, vs := range in.withPartialBody() {
		// The forwarding headers below are the edge's statement about the
		// request; a client's own must not reach the server beside them.
		if k == "Forwarded" || k == "X-Real-Ip" || strings.HasPrefix(k, "X-Forwarded-") {
			continue
		}
		req.Header[k] = vs
	}
	r := in.r
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	req.Header.Set("X-Forwarded-Method", r.Method)
	req.Header.Set("X-Forwarded-Proto", proto)
	req.Header.Set("X-Forwarded-Host", r.Host)
	req.Header.Set("X-Forwarded-Uri", r.URL.RequestURI())
	if in.clientIP != "" {
		req.Header.Set("X-Forwarded-For", in.clientIP)
	} else {
		req.Header.Del("X-Forwarded-For")
	}
	injectTrace(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ext_authz request: %w", err)
	}
	defer resp.Body.Close()
	sink := &headerSink{}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// An allow is an answer only once it ends: a server that breaks
		// off inside its body (closed, reset: it crashed, or a proxy in
		// front of it cut it) has not answered, as Envoy and Traefik read
		// it. A body past the bound is left unread: the head decided.
		if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxAuthzBodyBytes)); err != nil {
			return nil, fmt.Errorf("ext_authz response: %w", err)
		}
		d := &decision{allow: true, set: http.Header{}}
		for _, k := range h.upstream {
			for _, v := range resp.Header.Values(k) {
				if k, ok := sink.accept(k, v, true); ok {
					d.set[k] = append(d.set[k], v)
				}
			}
		}
		for k, claim := range h.claimsFrom {
			if v := resp.Header.Get(k); v != "" {
				if d.claims == nil {
					d.claims = map[string]any{}
				}
				d.claims[claim] = v
			}
		}
		if sink.err != nil {
			return nil, sink.err
		}
		return d, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAuthzBodyBytes+1))
	if err != nil {
		return deniedOverBounds(resp.StatusCode), fmt.Errorf("ext_authz response: %w", err)
	}
	if len(b) > maxAuthzBodyBytes {
		return deniedOverBounds(resp.StatusCode), fmt.Errorf("the authorization server's denial body is over %d bytes", maxAuthzBodyBytes)
	}
	d := &decision{status: denialStatus(resp.StatusCode), header: http.Header{}, body: b}
	for k, vs := range resp.Header {
		for _, v := range vs {
			if k, ok := sink.accept(k, v, false); ok {
				d.header[k] = append(d.header[k], v)
			}
		}
	}
	if sink.err != nil {
		return deniedOverBounds(resp.StatusCode), sink.err
	}
	// The server's framing describes its own response, not ours.
	d.header.Del("Date")
	return d, nil
}

// opaResult is the object form of a decision of OPA's Envoy plugin.
type opaResult struct {
	Allowed         *bool           `json:"allowed"`
	Headers         json.RawMessage `json:"headers"`
	RequestRemove   []string        `json:"request_headers_to_remove"`
	ResponseHeaders json.RawMessage `json:"response_headers_to_add"`
	HTTPStatus      int             `json:"http_status"`
	Body            string          `json:"body"`
	DynamicMetadata map[string]any  `json:"dynamic_metadata"`
}

// checkOPA asks OPA's data API. The input is Envoy's CheckRequest in JSON
// with parsed_path and parsed_query, as OPA's Envoy plugin builds it; the
// result is a boolean or an object with allowed, headers,
// request_headers_to_remove, response_headers_to_add, http_status, body
// and dynamic_metadata. An undefined result denies.
func (h *httpAuthz) checkOPA(ctx context.Context, in *checkInput) (*decision, error) {
	attrs, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(checkRequest(in, timestamppb.New(in.now)).GetAttributes())
	if err != nil {
		return nil, fmt.Errorf("encoding the OPA input: %w", err)
	}
	input := map[string]any{"attributes": json.RawMessage(attrs)}
	u := in.r.URL
	var parts []string
	for p := range strings.SplitSeq(strings.TrimPrefix(u.EscapedPath(), "/"), "/") {
		if s, err := url.PathUnescape(p); err == nil {
			parts = append(parts, s)
		} else {
			parts = append(parts, p)
		}
	}
	input["parsed_path"] = parts
	input["parsed_query"] = u.Query()
	if in.body != nil {
		// As OPA's Envoy plugin: a cut body is not parsed (its first bytes
		// may be valid JSON of another value, "100" of "1000000", or the
		// first line of many), and truncated_body says it was cut.
		input["truncated_body"] = in.partial
		if !in.partial && json.Valid(in.body) {
			input["parsed_body"] = json.RawMessage(in.body)
		}
	}
	payload, err := json.Marshal(map[string]any{"input": input})
	if err != nil {
		return nil, fmt.Errorf("encoding the OPA input: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("OPA request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	injectTrace(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("OPA request: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("OPA answered %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxOPAResponse+1))
	if err != nil {
		return nil, fmt.Errorf("OPA response: %w", err)
	}
	if len(raw) > maxOPAResponse {
		return nil, fmt.Errorf("OPA's decision is over %d bytes", maxOPAResponse)
	}
	return opaDecision(raw)
}

// opaDecision reads an OPA data API response: {"result": ...} where the
// result is a boolean, an object in the shape of OPA's Envoy plugin, or
// absent (an undefined decision, which denies).
func opaDecision(raw []byte) (*decision, error) {
	var doc struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("OPA response: %w", err)
	}
	switch t := bytes.TrimSpace(doc.Result); {
	case len(t) == 0 || string(t) == "null" || string(t) == "false":
		return &decision{status: http.StatusForbidden}, nil
	case string(t) == "true":
		return &decision{allow: true}, nil
	}
	var res opaResult
	if err := json.Unmarshal(doc.Result, &res); err != nil {
		return nil, fmt.Errorf("OPA decision: want a boolean or an object: %w", err)
	}
	if res.Allowed == nil {
		return nil, errors.New("OPA decision: the object has no boolean allowed")
	}
	sink := &headerSink{}
	if *res.Allowed {
		d := &decision{allow: true, set: http.Header{}, claims: res.DynamicMetadata}
		hdrs, err := opaHeaders(res.Headers)
		if err != nil {
			return nil, err
		}
		for k, vs := range hdrs {
			for _, v := range vs {
				if k, ok := sink.accept(k, v, true); ok {
					d.set[k] = append(d.set[k], v)
				}
			}
		}
		for _, k := range res.RequestRemove {
			if k, ok := sink.accept(k, "", true); ok {
				d.remove = append(d.remove, k)
			}
		}
		if sink.err != nil {
			return nil, sink.err
		}
		return d, nil
	}
	if len(res.Body) > maxAuthzBodyBytes {
		return deniedOverBounds(res.HTTPStatus), fmt.Errorf("OPA's denial body is over %d bytes", maxAuthzBodyBytes)
	}
	d := &decision{status: denialStatus(res.HTTPStatus), header: http.Header{}, body: []byte(res.Body)}
	hdrs, err := opaHeaders(res.ResponseHeaders)
	if err != nil {
		return deniedOverBounds(res.HTTPStatus), err
	}
	for k, vs := range hdrs {
		for _, v := range vs {
			if k, ok := sink.accept(k, v, false); ok {
				d.header[k] = append(d.header[k], v)
			}
		}
	}
	if sink.err != nil {
		return deniedOverBounds(res.HTTPStatus), sink.err
	}
	return d, nil
}

// opaHeaders reads a headers object whose values are strings or arrays of
// strings, as OPA's Envoy plugin accepts.
func opaHeaders(raw json.RawMessage) (map[string][]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("OPA decision headers: %w", err)
	}
	out := make(map[string][]string, len(m))
	for k, v := range m {
		var one string
		if err := json.Unmarshal(v, &one); err == nil {
			out[k] = []string{one}
			continue
		}
		var many []string
		if err := json.Unmarshal(v, &many); err != nil {
			return nil, fmt.Errorf("OPA decision header %q: want a string or an array of strings", k)
		}
		out[k] = many
	}
	return out, nil
}
