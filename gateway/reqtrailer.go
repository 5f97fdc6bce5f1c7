package gateway

import (
	"io"
	"net/http"
	"slices"

	"golang.org/x/net/http/httpguts"
)

// Request trailers: the fields a client sends after a chunked HTTP/1.1
// body, or in the HEADERS frame that ends an HTTP/2 request, go on to the
// upstream in the trailer section of the outbound body (HTTP/1.1 chunked,
// or HTTP/2 trailers), filtered.
//
// Only the fields the client announced in its Trailer header go on, on
// both front ends alike: net/http's HTTP/2 server keeps no trailers of a
// request that announced none, and an upstream then gets exactly the
// fields its request head told it to expect.
//
// An announced name is left out (from the outbound Trailer header and from
// the trailer section) when it is:
//   - not a valid field name, or a field net/http refuses as a trailer
//     (httpguts.ValidTrailerHeader: framing, routing, authentication,
//     controls, If-*), which the edge's HTTP/1.1 writer would refuse too;
//   - hop-by-hop: the standard ones, and those the client's Connection
//     header nominates (pipeline.DropNominatedTrailers takes these out
//     as the request enters, before the Connection header is cut down);
//   - a name the edge states for the service (internal/edgeheader: the
//     client-address and X-Forwarded-* headers, the URL overrides, the
//     X-Causeway-* ones), from anyone, trusted proxy or not: the edge sets
//     these in the header, and a service or a framework that merges
//     trailers into the header must not find a client's copy there;
//   - a name with '_', unless server.allow_underscore_headers, as in the
//     header (pipeline.DropUnderscoreTrailers, as the request enters): a
//     CGI-style service folds X_Request_Id into the edge's X-Request-Id;
//   - a name the outbound request's header carries once the route's
//     rewrite has run (a forwarded JWT claim, a request id, a header the
//     route sets): the header the edge decided on is not contradicted
//     after the body.
//
// A value net/http would refuse to write (CR, LF, NUL and other controls)
// leaves its field out at the end of the body: the edge's servers never
// hand such a value over, so this only keeps a cut body from being the
// price of a value that cannot be written.

// forwardedTrailer returns the outbound request's Trailer: the names of
// in (the client's request's Trailer, announced names with values still
// to come) that go on, with no values yet; nil when none does.
func forwardedTrailer(in *http.Request, outHeader http.Header) http.Header {
	if len(in.Trailer) == 0 {
		return nil
	}
	var names []string
	if a, ok := in.Context().Value(announcedKey{}).(*announced); ok {
		names = a.names
	} else {
		// Not through runtime.serve (a forwarder alone): no stage has
		// read the body, so in.Trailer holds the announced names only.
		names = announcedTrailers(in.Trailer)
	}
	var out http.Header
	for _, k := range names {
		if !trailerForwardable(k, nil, outHeader) {
			continue
		}
		if out == nil {
			out = make(http.Header, len(in.Trailer))
		}
		out[k] = nil
	}
	return out
}

// announcedKey is the context key of the trailer names a request
// announced, as runtime.serve filtered them when it entered: the server
// adds every field it received to the request's Trailer at the body's
// end, announced or not (a nominated or '_' name deleted before comes
// back), and a stage that reads the body first (a plugin checking a
// signature) ends it before the forwarder looks. Set only for requests
// that announce trailers.
type announcedKey struct{}

// announced is the value under announcedKey: a pointer, so that a stage
// that states a header of its own (dropTrailers) can take its name out.
type announced struct{ names []string }

// dropTrailers takes names out of what r's client announced, so that no
// trailer of those names goes on: a stage that removes a client's header
// (the caller token outside the mesh, the headers a sidecar sets from a
// verified token, the headers the authenticators state) removes the
// trailer of that name too, since a service or a framework that merges
// trailers into the header would find the client's copy there. Names are
// compared folded (case, '_' as '-'), as the header's copies are removed:
// under server.allow_underscore_headers, X_User_Id is X-User-Id to a
// CGI-style service.
func dropTrailers(r *http.Request, names ...string) {
	if len(r.Trailer) == 0 || len(names) == 0 {
		return
	}
	folded := make(map[string]bool, len(names))
	for _, n := range names {
		folded[foldName(n)] = true
	}
	for k := range r.Trailer {
		if folded[foldName(k)] {
			delete(r.Trailer, k)
		}
	}
	if a, _ := r.Context().Value(announcedKey{}).(*announced); a != nil {
		a.names = slices.DeleteFunc(a.names, func(x string) bool { return folded[foldName(x)] })
	}
}

// announcedTrailers returns the names of trailer, nil when none.
func announcedTrailers(trailer http.Header) []string {
	if len(trailer) == 0 {
		return nil
	}
	names := make([]string, 0, len(trailer))
	for k := range trailer {
		names = append(names, k)
	}
	return names
}

// fillTrailer copies the values the client sent for out's names, once
// the client's body has ended (in.Trailer is complete then: both servers
// fill it before the body's io.EOF). out is the outbound request's
// Trailer, filled in place: the transports hold that map from the head
// on and read it after the body's io.EOF, on the goroutine that read it.
func fillTrailer(out http.Header, in *http.Request) {
	for k := range out {
		var vv []string
		for _, v := range in.Trailer[k] {
			if httpguts.ValidHeaderFieldValue(v) {
				vv = append(vv, v)
			}
		}
		out[k] = vv
	}
}

// trailerBody is the outbound body of a request with trailers to
// forward: at the client body's io.EOF the outbound trailer gets its
// values. A wrapper made only for such requests, so that the forwarder's
// per-request state, allocated for every request, stays as small as it
// was (one word more moves it to the next size class).
type trailerBody struct {
	body   io.ReadCloser // the forwarder's forwardBody
	in     *http.Request // the client's request
	out    http.Header   // the outbound request's Trailer
	filled bool
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF && !b.filled { // bodies return io.EOF bare
		b.filled = true
		fillTrailer(b.out, b.in)
	}
	return n, err
}

func (b *trailerBody) Close() error { return b.body.Close() }
