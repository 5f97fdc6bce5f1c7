package httperr

import (
	"net/http"
	"strconv"
	"strings"
)

// gRPC status codes (google.golang.org/grpc/codes), kept here as numbers so
// that every package answering errors does not pull in grpc-go.
const (
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcNotFound          = 5
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// IsGRPC reports whether r is a gRPC (or gRPC-Web) call: its content type is
// application/grpc or application/grpc+codec, application/grpc-web, ...
func IsGRPC(r *http.Request) bool {
	return IsGRPCContentType(r.Header.Get("Content-Type"))
}

// IsGRPCContentType reports whether ct is a gRPC (or gRPC-Web) content
// type, as IsGRPC reads a request's.
func IsGRPCContentType(ct string) bool {
	const prefix = "application/grpc"
	if len(ct) < len(prefix) || !strings.EqualFold(ct[:len(prefix)], prefix) {
		return false
	}
	if len(ct) == len(prefix) {
		return true
	}
	switch ct[len(prefix)] {
	case '+', '-', ';':
		return true
	}
	return false
}

// GRPCCode is the gRPC status code a client sees for an HTTP status the
// edge decided itself. It follows gRPC's HTTP-to-gRPC mapping
// (doc/http-grpc-status-mapping.md) where the edge knows no more than the
// status, and is more precise where it does: a 429 is the edge's own rate
// limit (RESOURCE_EXHAUSTED, which clients do not blindly retry, unlike
// UNAVAILABLE), a 504 or 408 a deadline it enforced.
func GRPCCode(status int) int {
	switch status {
	case http.StatusBadRequest, http.StatusRequestHeaderFieldsTooLarge,
		http.StatusInternalServerError:
		return grpcInternal
	case http.StatusUnauthorized:
		return grpcUnauthenticated
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return grpcUnimplemented
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return grpcDeadlineExceeded
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return grpcResourceExhausted
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return grpcUnavailable
	}
	return grpcUnknown
}

// writeGRPC answers status as the gRPC status it maps to (GRPCCode).
func writeGRPC(w http.ResponseWriter, r *http.Request, status int, msg string) {
	WriteGRPCStatus(w, r, GRPCCode(status), msg)
}

// WriteGRPCStatus answers the gRPC call r with the gRPC status code and
// msg, in gRPC's trailers-only form: HTTP 200, no body, and grpc-status /
// grpc-message in the one HEADERS frame that ends the stream. msg is plain
// text; it is percent-encoded here. A gRPC-Web client gets its own content
// type back, as its spec requires. Write is the way for an HTTP status;
// this is for a caller that was given the gRPC code itself.
func WriteGRPCStatus(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h := w.Header()
	ct := "application/grpc"
	if reqCT := r.Header.Get("Content-Type"); len(reqCT) >= len("application/grpc-web") &&
		strings.EqualFold(reqCT[:len("application/grpc-web")], "application/grpc-web") {
		ct = "application/grpc-web"
	}
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	h.Set("Content-Type", ct)
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", grpcMessage(msg))
	w.WriteHeader(http.StatusOK)
}

// grpcMessage percent-encodes msg as the gRPC HTTP/2 protocol asks: every
// byte outside printable ASCII, and '%' itself.
func grpcMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			if b != nil {
				b = append(b, c)
			}
			continue
		}
		if b == nil {
			b = append(make([]byte, 0, len(msg)+8), msg[:i]...)
		}
		b = append(b, '%', hex[c>>4], hex[c&0xF])
	}
	if b == nil {
		return msg
	}
	return string(b)
}
