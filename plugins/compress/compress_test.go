package compress

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins/plugintest"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigErrors(t *testing.T) {
	tests := []struct{ desc, config, want string }{
		{"unsupported encoding", "encodings: [br]", `plugins.p.config.encodings: "br": supported encodings are zstd and gzip`},
		{"duplicate encoding", "encodings: [gzip, gzip]", "listed twice"},
		{"negative min_length", "min_length: -1", "plugins.p.config.min_length: must not be negative"},
		{"bad level", "level: 11", `plugins.p.config.level: "11": use fastest, default or best`},
		{"bad exclude type", "exclude_types: [text]", "is not a media type"},
		{"unknown key", "types: [text/html]", "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := plugintest.ConfigError(t, "compress", tt.config); !strings.Contains(got, tt.want) {
				t.Fatalf("error %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	c := plugintest.MustNew(t, "compress", "").(*Compress)
	gzipFirst := plugintest.MustNew(t, "compress", "encodings: [gzip, zstd]").(*Compress)
	tests := []struct {
		desc   string
		c      *Compress
		header string
		want   string
	}{
		{"none", c, "", ""},
		{"gzip only", c, "gzip", "gzip"},
		{"x-gzip alias", c, "x-gzip", "gzip"},
		{"both, server order", c, "gzip, deflate, br, zstd", "zstd"},
		{"both, other server order", gzipFirst, "gzip, zstd", "gzip"},
		{"client weights win", c, "zstd;q=0.5, gzip;q=0.9", "gzip"},
		{"q=0 refuses", c, "gzip;q=0", ""},
		{"star", c, "*", "zstd"},
		{"star with a refusal", c, "*, zstd;q=0", "gzip"},
		{"star refused", c, "*;q=0, identity", ""},
		{"identity only", c, "identity", ""},
		{"malformed weight", c, "gzip;q=high", ""},
		{"case and spaces", c, " GZip ; Q=1 ", "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var h []string
			if tt.header != "" {
				h = []string{tt.header}
			}
			if got := tt.c.negotiate(h); got != tt.want {
				t.Fatalf("negotiate(%q) = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

var text = strings.Repeat("Causeway compresses what is worth compressing. ", 200)

func decode(t *testing.T, enc string, r io.Reader) string {
	t.Helper()
	switch enc {
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("gzip body: %v", err)
		}
		return string(b)
	case "zstd":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("zstd body: %v", err)
		}
		return string(b)
	}
	b, _ := io.ReadAll(r)
	return string(b)
}

func TestResponses(t *testing.T) {
	type resp struct {
		status  int
		headers map[string]string
		body    string
		chunks  int // write the body in this many pieces
		// untyped marks the answer as having no type (a nil
		// Content-Type, as the forwarder relays an upstream answer
		// that stated none): nothing may be sniffed onto it.
		untyped bool
		flush   bool // flush after writing the body
	}
	tests := []struct {
		desc     string
		config   string
		method   string
		accept   string
		resp     resp
		wantEnc  string
		wantVary bool
		wantCT   string
		wantETag string
		wantNoCT bool // no Content-Type field at all
	}{
		{desc: "gzip", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain"}, body: text}, wantEnc: "gzip", wantVary: true},
		{desc: "zstd", accept: "gzip, zstd", resp: resp{headers: map[string]string{"Content-Type": "application/json"}, body: text}, wantEnc: "zstd", wantVary: true},
		{desc: "many small writes", accept: "zstd", resp: resp{headers: map[string]string{"Content-Type": "text/css"}, body: text, chunks: 97}, wantEnc: "zstd", wantVary: true},
		{desc: "declared length", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/html", "Content-Length": "9600"}, body: text}, wantEnc: "gzip", wantVary: true},
		{desc: "client accepts nothing: Vary still", accept: "", resp: resp{headers: map[string]string{"Content-Type": "text/html"}, body: text}, wantVary: true},
		{desc: "client accepts nothing, declared length: Vary still", accept: "", resp: resp{headers: map[string]string{"Content-Type": "text/html", "Content-Length": strconv.Itoa(len(text))}, body: text}, wantVary: true},
		{desc: "client accepts nothing, flushed: Vary still", accept: "", resp: resp{headers: map[string]string{"Content-Type": "text/event-stream"}, body: "data: x\n\n", flush: true}, wantVary: true},
		// Below min_length no client gets it compressed: nothing to vary on.
		{desc: "too small", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain"}, body: "tiny"}},
		{desc: "too small, client accepts nothing", accept: "", resp: resp{headers: map[string]string{"Content-Type": "text/plain"}, body: "tiny"}},
		{desc: "empty", accept: "gzip", resp: resp{status: 200, headers: map[string]string{"Content-Type": "text/plain"}}},
		{desc: "too small, declared", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain", "Content-Length": "4"}, body: "tiny"}},
		{desc: "min_length lowered", config: "min_length: 1", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain"}, body: "tiny"}, wantEnc: "gzip", wantVary: true},
		{desc: "already compressed type", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "image/png"}, body: text}},
		{desc: "svg is text", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "image/svg+xml"}, body: text}, wantEnc: "gzip", wantVary: true},
		{desc: "excluded by config", config: "exclude_types: [text/*]", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain; charset=utf-8"}, body: text}},
		{desc: "upstream already encoded", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain", "Content-Encoding": "br"}, body: text}, wantEnc: "br"},
		{desc: "no-transform", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain", "Cache-Control": "public, no-transform"}, body: text}},
		{desc: "partial content", accept: "gzip", resp: resp{status: 206, headers: map[string]string{"Content-Type": "text/plain"}, body: text}},
		{desc: "HEAD", method: "HEAD", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain"}, body: text}},
		{desc: "sniffed type", accept: "gzip", resp: resp{body: "<!DOCTYPE html><html>" + text}, wantEnc: "gzip", wantVary: true, wantCT: "text/html; charset=utf-8"},
		{desc: "sniffed binary type", accept: "gzip", resp: resp{body: "\x89PNG\r\n\x1a\n" + text}, wantCT: "image/png"},
		{desc: "untyped: sniffed to decide, no type added", accept: "gzip", resp: resp{untyped: true, body: "<!DOCTYPE html><html>" + text}, wantEnc: "gzip", wantVary: true, wantNoCT: true},
		// Decided once buffered, not at the first write: Vary is stated, as for any answer decided then.
		// An untyped answer whose body is of a type never compressed
		// gets no Vary: no Accept-Encoding would change it.
		{desc: "untyped binary: not compressed, no type added", accept: "gzip", resp: resp{untyped: true, body: "\x89PNG\r\n\x1a\n" + text}, wantNoCT: true},
		{desc: "untyped binary of declared length", accept: "gzip", resp: resp{untyped: true, headers: map[string]string{"Content-Length": strconv.Itoa(8 + len(text))}, body: "\x89PNG\r\n\x1a\n" + text}, wantNoCT: true},
		{desc: "untyped binary, client accepts nothing", accept: "", resp: resp{untyped: true, body: "\x89PNG\r\n\x1a\n" + text}, wantNoCT: true},
		{desc: "untyped binary, client accepts identity only", accept: "identity", resp: resp{untyped: true, body: "\x89PNG\r\n\x1a\n" + text}, wantNoCT: true},
		{desc: "untyped text, client accepts nothing: Vary", accept: "", resp: resp{untyped: true, body: "<!DOCTYPE html><html>" + text}, wantVary: true, wantNoCT: true},
		{desc: "untyped text of declared length, client accepts nothing: Vary", accept: "", resp: resp{untyped: true, headers: map[string]string{"Content-Length": strconv.Itoa(21 + len(text))}, body: "<!DOCTYPE html><html>" + text}, wantVary: true, wantNoCT: true},
		{desc: "untyped, too small", accept: "gzip", resp: resp{untyped: true, body: "<html>tiny"}, wantNoCT: true},
		{desc: "untyped, empty", accept: "gzip", resp: resp{untyped: true, status: 200}, wantNoCT: true},
		{desc: "untyped no content", accept: "gzip", resp: resp{untyped: true, status: 204}, wantNoCT: true},
		{desc: "untyped not modified", accept: "gzip", resp: resp{untyped: true, status: 304, headers: map[string]string{"ETag": `"v1"`}}, wantNoCT: true},
		{desc: "untyped partial content", accept: "gzip", resp: resp{untyped: true, status: 206, headers: map[string]string{"Content-Range": fmt.Sprintf("bytes 0-%d/%d", len(text)-1, 2*len(text))}, body: text}, wantNoCT: true},
		{desc: "untyped, already encoded", accept: "gzip", resp: resp{untyped: true, headers: map[string]string{"Content-Encoding": "br"}, body: text}, wantEnc: "br", wantNoCT: true},
		{desc: "untyped HEAD", method: "HEAD", accept: "gzip", resp: resp{untyped: true, body: text}, wantNoCT: true},
		{desc: "strong ETag weakened", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain", "ETag": `"v1"`}, body: text}, wantEnc: "gzip", wantVary: true, wantETag: `W/"v1"`},
		{desc: "Vary kept", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain", "Vary": "Origin"}, body: text}, wantEnc: "gzip", wantVary: true},
		// An upstream's Vary that names Accept-Encoding already, in any
		// case, is not added to.
		{desc: "upstream Vary names it", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain", "Vary": "Origin, accept-encoding"}, body: text}, wantEnc: "gzip", wantVary: true},
		{desc: "upstream Vary names it, untyped", accept: "gzip", resp: resp{untyped: true, headers: map[string]string{"Vary": "Accept-Encoding"}, body: "<!DOCTYPE html><html>" + text}, wantEnc: "gzip", wantVary: true, wantNoCT: true},
		{desc: "upstream Vary names it, not compressed: kept", accept: "gzip", resp: resp{headers: map[string]string{"Content-Type": "text/plain", "Vary": "Accept-Encoding"}, body: "tiny"}, wantVary: true},
		{desc: "no content", accept: "gzip", resp: resp{status: 204, headers: map[string]string{"Content-Type": "text/plain"}}},
		{desc: "not modified", accept: "gzip", resp: resp{status: 304, headers: map[string]string{"Content-Type": "text/plain", "ETag": `"v1"`}}},
		{desc: "error status compressed too", accept: "gzip", resp: resp{status: 500, headers: map[string]string{"Content-Type": "text/plain"}, body: text}, wantEnc: "gzip", wantVary: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			inst := plugintest.MustNew(t, "compress", tt.config)
			srv := httptest.NewServer(inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.resp.headers {
					w.Header().Set(k, v)
				}
				if tt.resp.untyped {
					w.Header()["Content-Type"] = nil
				}
				if tt.resp.status != 0 {
					w.WriteHeader(tt.resp.status)
				}
				n := max(tt.resp.chunks, 1)
				step := (len(tt.resp.body) + n - 1) / n
				for i := 0; i < len(tt.resp.body); i += step {
					io.WriteString(w, tt.resp.body[i:min(i+step, len(tt.resp.body))])
				}
				if tt.resp.flush {
					w.(http.Flusher).Flush()
				}
			})))
			defer srv.Close()
			req, _ := http.NewRequest(cmp(tt.method, "GET"), srv.URL, nil)
			if tt.accept != "" {
				req.Header.Set("Accept-Encoding", tt.accept)
			}
			// A transport that leaves Content-Encoding to us.
			client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer client.CloseIdleConnections()
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			enc := res.Header.Get("Content-Encoding")
			if enc != tt.wantEnc {
				t.Fatalf("Content-Encoding %q, want %q", enc, tt.wantEnc)
			}
			body := decode(t, enc, res.Body)
			if tt.method != "HEAD" && body != tt.resp.body {
				t.Fatalf("body (%d bytes) differs from what the handler wrote (%d bytes)", len(body), len(tt.resp.body))
			}
			if enc == "gzip" || enc == "zstd" {
				if res.Header.Get("Content-Length") == strconv.Itoa(len(tt.resp.body)) {
					t.Fatal("Content-Length of the uncompressed body kept")
				}
			}
			vary := strings.Join(res.Header.Values("Vary"), ", ")
			named := 0
			for f := range strings.SplitSeq(vary, ",") {
				if strings.EqualFold(strings.TrimSpace(f), "Accept-Encoding") {
					named++
				}
			}
			if (named > 0) != tt.wantVary || named > 1 {
				t.Fatalf("Vary %q, want Accept-Encoding (once): %v", vary, tt.wantVary)
			}
			if v := tt.resp.headers["Vary"]; v != "" && !strings.Contains(vary, v) {
				t.Fatalf("Vary %q lost %q", vary, v)
			}
			if tt.wantCT != "" && res.Header.Get("Content-Type") != tt.wantCT {
				t.Fatalf("Content-Type %q, want %q", res.Header.Get("Content-Type"), tt.wantCT)
			}
			if ct, ok := res.Header["Content-Type"]; tt.wantNoCT && ok {
				t.Fatalf("Content-Type %q, want none", ct)
			}
			if tt.wantETag != "" && res.Header.Get("ETag") != tt.wantETag {
				t.Fatalf("ETag %q, want %q", res.Header.Get("ETag"), tt.wantETag)
			}
		})
	}
}

// TestStreamingFlush checks that a flushed event reaches the client through
// the encoder before the handler finishes (server-sent events).
func TestStreamingFlush(t *testing.T) {
	for _, enc := range []string{"gzip", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			inst := plugintest.MustNew(t, "compress", "")
			proceed := make(chan struct{})
			srv := httptest.NewServer(inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: one\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-proceed:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, "data: two\n\n")
			})))
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer client.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			req.Header.Set("Accept-Encoding", enc)
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.Header.Get("Content-Encoding") != enc {
				t.Fatalf("Content-Encoding %q", res.Header.Get("Content-Encoding"))
			}
			var zr io.Reader
			if enc == "gzip" {
				g, err := gzip.NewReader(res.Body)
				if err != nil {
					t.Fatal(err)
				}
				zr = g
			} else {
				z, err := zstd.NewReader(res.Body, zstd.WithDecoderConcurrency(1))
				if err != nil {
					t.Fatal(err)
				}
				defer z.Close()
				zr = z
			}
			br := bufio.NewReader(zr)
			line, err := br.ReadString('\n')
			if err != nil || line != "data: one\n" {
				close(proceed)
				t.Fatalf("first event %q, %v: the flush did not get through the encoder", line, err)
			}
			close(proceed)
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "\ndata: two\n\n" {
				t.Fatalf("rest %q, %v", rest, err)
			}
		})
	}
}

// TestPanicDoesNotCompleteBody checks that an aborted response is not
// closed with a valid trailer, which would hide the truncation.
func TestPanicDoesNotCompleteBody(t *testing.T) {
	inst := plugintest.MustNew(t, "compress", "")
	srv := httptest.NewUnstartedServer(inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, text)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})))
	srv.Config.ErrorLog = nil
	srv.Start()
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	zr, err := gzip.NewReader(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(zr); err == nil {
		t.Fatal("a response cut off by a panic decoded as complete")
	}
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
