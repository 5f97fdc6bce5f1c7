package transport

import (
	"fmt"
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// TrailerLimit bounds an upstream response's trailer section: 4 KiB, the
// read buffer net/http's client reads one in, so no section passes here
// that net/http's would refuse.
const TrailerLimit = 4 << 10

// CheckAnnouncedTrailer is the rule for the trailer names a response
// announces (its Trailer header, as res.Trailer holds them): each must be
// a field name, and one RFC 9110 6.5.1 lets be a trailer
// (httpguts.ValidTrailerHeader): ReverseProxy announces these names to the
// client, and such a field must not come after the body. H1 applies it
// when it reads a head; the forwarder applies it to every response, for
// those another transport read (http.Transport's, for h2 and h2c
// upstreams), as CheckSwitch is applied to their 101s.
func CheckAnnouncedTrailer(t http.Header) error {
	for k := range t {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidTrailerHeader(k) {
			return fmt.Errorf("upstream announced the forbidden trailer field %q", k)
		}
	}
	return nil
}

// CheckTrailer is the rule for a trailer section once the body has ended
// (res.Trailer): every field may be a trailer, as above, and the section is
// at most TrailerLimit bytes counted as TrailerSize counts it. H1 applies
// it at the end of a chunked body, the forwarder (directProxy, and the
// upgrade tunnel for a declined upgrade) to every response, so that the
// same fields get the same answer whichever transport read them.
func CheckTrailer(t http.Header) error {
	for k := range t {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidTrailerHeader(k) {
			return fmt.Errorf("upstream sent the forbidden trailer field %q", k)
		}
	}
	if n := TrailerSize(t); n > TrailerLimit {
		return fmt.Errorf("upstream's trailer section is %d bytes, over %d", n, TrailerLimit)
	}
	return nil
}

// TrailerSize is the size of the trailer section t in its HTTP/1.1 form:
// "Name: value\r\n" for each value, and the empty line that ends the
// section. Counted from the fields, not as they came, since an HTTP/2
// trailer has no such form: an HTTP/1.1 upstream that writes "Name:value"
// counts one byte more than it sent. An HTTP/1.1 upstream's section is
// also held to TrailerLimit as sent (H1's chunked reader reads no more,
// as net/http's does not): one padded with whitespace around its values
// can be refused there where the same fields over HTTP/2 pass.
func TrailerSize(t http.Header) int {
	n := len("\r\n")
	for k, vv := range t {
		for _, v := range vv {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}
