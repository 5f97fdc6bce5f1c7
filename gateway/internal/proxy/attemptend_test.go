package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// An attempt ends when the caller closes the response body: the endpoint's
// in-flight count (least_request, p2c_ewma) drops once, whatever the body
// did, and never twice. A body of the own HTTP/1.1 client without a
// per-try timeout ends the attempt itself (transport.OnBodyClose), with no
// wrapper allocated per request; a body without content (204), a body of
// another transport (h2c) and an attempt with a per-try context to release
// keep the wrapper. Many concurrent requests of every shape, under -race,
// each checking the body it got, then every count back at zero.
func TestAttemptEndsWithItsBody(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("b", 32<<10) // past the buffers: an early Close leaves some unread
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/len":
			w.Header().Set("Content-Length", "9")
			_, _ = io.WriteString(w, "with-len"+r.URL.RawQuery[:1])
		case "/chunked":
			_, _ = io.WriteString(w, "chunk-")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, r.URL.RawQuery[:1])
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/big":
			_, _ = io.WriteString(w, big)
		}
	})
	plain := httptest.NewServer(handler)
	defer plain.Close()
	h2c := httptest.NewUnstartedServer(handler)
	h2c.Config.Protocols = new(http.Protocols)
	h2c.Config.Protocols.SetHTTP1(true)
	h2c.Config.Protocols.SetUnencryptedHTTP2(true)
	h2c.Start()
	defer h2c.Close()

	for _, up := range []struct {
		desc string
		yaml string
		addr string
		// wrapped: the attempt keeps its wrapper for a body with content.
		wrapped bool
	}{
		{"own HTTP/1.1 client", "", plain.URL, false},
		{"own HTTP/1.1 client, per-try timeout", "    retries: {attempts: 1, per_try_timeout: 1m}\n", plain.URL, true},
		{"h2c through net/http", "    protocol: h2c\n", h2c.URL, true},
	} {
		t.Run(up.desc, func(t *testing.T) {
			addr := strings.TrimPrefix(up.addr, "http://")
			cfg := upstreamFrom(t, fmt.Sprintf("    endpoints: [%q]\n    balance: least_request\n%s", addr, up.yaml))
			u, err := New("u", cfg, Deps{})
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			defer u.Pool.CloseIdle()
			const workers, perWorker = 16, 80
			shapes := []struct {
				path string
				how  closing
			}{
				{"/len", readAllClose}, {"/len", closeTwice}, {"/len", closeRacing},
				{"/chunked", readAllClose}, {"/chunked", closeRacing},
				{"/empty", readAllClose}, {"/empty", closeTwice},
				{"/big", closeEarly}, {"/big", readAllClose},
			}
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					for i := range perWorker {
						sh := shapes[(w+i)%len(shapes)]
						tag := string(rune('a' + (w+i)%26))
						if err := attemptOnce(u, sh.path, tag, sh.how, up.wrapped, big); err != nil {
							errs <- fmt.Errorf("worker %d request %d %s: %w", w, i, sh.path, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for _, ep := range u.Endpoints() {
				if n := ep.Inflight.Load(); n != 0 {
					t.Errorf("endpoint %s: %d requests in flight after every body was closed, want 0", ep.Addr, n)
				}
			}
		})
	}
}

// closing is how a test closes a response body.
type closing int

const (
	readAllClose closing = iota // read to EOF, then Close
	closeEarly                  // Close before EOF (the connection goes)
	closeTwice                  // read to EOF, Close, Close
	closeRacing                 // read to EOF, two goroutines Close at once
)

// attemptOnce sends one GET for path through u and closes its body the
// way how (TestAttemptEndsWithItsBody's closing) says.
func attemptOnce(u *Upstream, path, tag string, how closing, wrapped bool, big string) error {
	req, err := http.NewRequest(http.MethodGet, "http://u"+path+"?"+tag, nil)
	if err != nil {
		return err
	}
	resp, err := u.Transport.RoundTrip(req)
	if err != nil {
		return err
	}
	_, isWrapper := resp.Body.(*attemptBody)
	if want := wrapped || resp.Body == http.NoBody || path == "/empty"; isWrapper != want {
		resp.Body.Close()
		return fmt.Errorf("body wrapped %t, want %t (%T)", isWrapper, want, resp.Body)
	}
	want := map[string]string{"/len": "with-len" + tag, "/chunked": "chunk-" + tag, "/empty": "", "/big": big}[path]
	if how == closeEarly {
		b := make([]byte, 100)
		if _, err := io.ReadFull(resp.Body, b); err != nil || string(b) != want[:100] {
			resp.Body.Close()
			return fmt.Errorf("first bytes %q: %w", b, err)
		}
		return resp.Body.Close()
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != want {
		resp.Body.Close()
		return fmt.Errorf("body %d bytes (%.20q), want %d bytes: %w", len(b), b, len(want), err)
	}
	switch how {
	case closeTwice:
		resp.Body.Close()
		return resp.Body.Close()
	case closeRacing:
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { resp.Body.Close() })
		}
		wg.Wait()
		return nil
	}
	return resp.Body.Close()
}
