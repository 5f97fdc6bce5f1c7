// Package httperr writes the JSON error body every Causeway component answers
// with: {"error": "...", "status": N, "request_id": "..."}.
package httperr

import (
	"net/http"
	"strconv"
	"unicode/utf8"
)

// RequestIDHeader carries the request id; the edge sets it on every inbound
// request before any handler runs, so the body can always name it.
const RequestIDHeader = "X-Request-Id"

// Write sends status with the JSON error body. msg must be safe to show a
// client: nothing from the gateway's internals.
//
// A gRPC request (content-type application/grpc, +proto, -web, ...) gets
// the same refusal as a gRPC error instead, since a gRPC client reads no
// JSON body and turns a bare HTTP status into a vague "unexpected HTTP
// status code".
func Write(w http.ResponseWriter, r *http.Request, status int, msg string) {
	id := ""
	if r != nil {
		id = r.Header.Get(RequestIDHeader)
		if IsGRPC(r) {
			writeGRPC(w, r, status, msg)
			return
		}
	}
	if r != nil && r.Method == http.MethodHead {
		// A HEAD answer has no body, so it names no type: clients (the
		// Gateway API conformance suite's among them) that parse a body by
		// its Content-Type would otherwise fail on an empty JSON body.
		h := w.Header()
		h.Del("Content-Type")
		h.Del("Content-Encoding")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(status)
		return
	}
	body := make([]byte, 0, 64+len(msg)+len(id))
	body = append(body, `{"error":`...)
	body = appendJSONString(body, msg)
	body = append(body, `,"status":`...)
	body = strconv.AppendInt(body, int64(status), 10)
	body = append(body, `,"request_id":`...)
	body = appendJSONString(body, id)
	body = append(body, "}\n"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Encoding")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// appendJSONString appends s as a JSON string without going through
// encoding/json's reflection: error replies are on the hot path of a flood.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
