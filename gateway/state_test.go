package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// deadlineWriter is a ResponseWriter with read deadlines, as net/http's are,
// that records every deadline set through http.ResponseController.
type deadlineWriter struct {
	*httptest.ResponseRecorder
	mu    sync.Mutex
	calls []time.Time
}

func (w *deadlineWriter) SetReadDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, t)
	return nil
}

func (w *deadlineWriter) deadlines() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.calls...)
}

// stallingBody hands out data, then fails every read with a deadline error
// as a connection whose read deadline passed does.
type stallingBody struct {
	data  string
	reads int
}

func (b *stallingBody) Read(p []byte) (int, error) {
	b.reads++
	if b.data == "" {
		return 0, fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded)
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func (b *stallingBody) Close() error { return nil }

func timeoutServer(d time.Duration, readTimeout time.Duration) *routes.Server {
	t := routes.Duration(d)
	return &routes.Server{BodyReadTimeout: &t, ReadTimeout: routes.Duration(readTimeout)}
}

func TestClientBodyDeadlines(t *testing.T) {
	t.Run("each read moves the deadline, EOF clears it", func(t *testing.T) {
		w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
		st := &reqState{start: time.Now()}
		before := time.Now()
		body := st.wrapBody(w, bodyRequest(io.NopCloser(strings.NewReader("abc"))), timeoutServer(time.Minute, 0))
		got, err := io.ReadAll(io.LimitReader(body, 1<<10))
		if err != nil || string(got) != "abc" {
			t.Fatalf("read %q, %v", got, err)
		}
		calls := w.deadlines()
		if len(calls) < 2 || !calls[len(calls)-1].IsZero() {
			t.Fatalf("deadlines %v: want one per read, then cleared", calls)
		}
		for _, d := range calls[:len(calls)-1] {
			if d.Before(before.Add(time.Minute)) {
				t.Fatalf("deadline %v is not a minute after the read", d)
			}
		}
		st.endBody()
		if n := len(w.deadlines()); n != len(calls) {
			t.Fatalf("%d deadline calls after the body was done, want none", n-len(calls))
		}
		if st.bodyRead.Load() != 3 || st.rec.wrote {
			t.Fatalf("bytes %d, wrote %v", st.bodyRead.Load(), st.rec.wrote)
		}
	})

	t.Run("read_timeout caps the deadline", func(t *testing.T) {
		w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
		st := &reqState{start: time.Now()}
		body := st.wrapBody(w, bodyRequest(io.NopCloser(strings.NewReader("abc"))), timeoutServer(time.Hour, time.Second))
		_, _ = body.Read(make([]byte, 1))
		if calls := w.deadlines(); len(calls) != 1 || !calls[0].Equal(st.start.Add(time.Second)) {
			t.Fatalf("deadlines %v, want the request's read_timeout end %v", calls, st.start.Add(time.Second))
		}
	})

	t.Run("off: no deadline calls", func(t *testing.T) {
		w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
		st := &reqState{start: time.Now()}
		body := st.wrapBody(w, bodyRequest(io.NopCloser(strings.NewReader("abc"))), timeoutServer(0, 0))
		if got, err := io.ReadAll(body); err != nil || string(got) != "abc" {
			t.Fatalf("read %q, %v", got, err)
		}
		body.Close()
		st.endBody()
		if calls := w.deadlines(); len(calls) != 0 {
			t.Fatalf("deadlines %v with body_read_timeout 0", calls)
		}
	})

	t.Run("a stall cuts the body for good and answers 408", func(t *testing.T) {
		w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
		st := &reqState{start: time.Now(), requestID: "rid-1"}
		st.rec.ResponseWriter = w
		inner := &stallingBody{data: "ab"}
		body := st.wrapBody(w, bodyRequest(inner), timeoutServer(time.Minute, 0))
		_, err := io.ReadAll(body)
		var stalled *errBodyStalled
		if !errors.As(err, &stalled) || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("error %v, want a stall wrapping the deadline error", err)
		}
		if !st.BodyFailed() {
			t.Fatal("the stall is not recorded as the client's body failing")
		}
		calls, reads := len(w.deadlines()), inner.reads
		// A drain after the cut gets the same error at once, without
		// waiting on the connection or moving its deadline.
		if _, err := body.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after the cut: %v", err)
		}
		body.Close()
		st.upstreamErr = err
		st.endBody()
		if len(w.deadlines()) != calls || inner.reads != reads {
			t.Fatal("the connection was read or its expired deadline moved after the cut")
		}
		if w.Code != http.StatusRequestTimeout || st.rec.status != http.StatusRequestTimeout || !strings.Contains(w.Body.String(), `"request_id":"rid-1"`) {
			t.Fatalf("answer %d %q (recorded %d), want 408 with the request id", w.Code, w.Body, st.rec.status)
		}
		if st.upstreamErr != nil {
			t.Fatalf("the stall is left as an upstream error: %v", st.upstreamErr)
		}
	})

	t.Run("an error answer after a stall becomes 408", func(t *testing.T) {
		w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
		st := &reqState{start: time.Now(), requestID: "rid-2"}
		st.rec.ResponseWriter = w
		body := st.wrapBody(w, bodyRequest(&stallingBody{}), timeoutServer(time.Minute, 0))
		_, _ = io.ReadAll(body)
		// What the forwarder answers for a broken client body.
		st.rec.Header().Set("Content-Length", "99")
		st.rec.WriteHeader(http.StatusBadRequest)
		_, _ = st.rec.Write([]byte(`{"error":"malformed or incomplete request body","status":400}`))
		st.endBody()
		if w.Code != http.StatusRequestTimeout || strings.Contains(w.Body.String(), "400") {
			t.Fatalf("answer %d %q, want only the 408", w.Code, w.Body)
		}
		if cl := w.Header().Get("Content-Length"); cl != fmt.Sprint(w.Body.Len()) {
			t.Fatalf("Content-Length %s for a %d-byte body", cl, w.Body.Len())
		}
	})

	t.Run("no deadline is touched after the handler returned", func(t *testing.T) {
		w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
		st := &reqState{start: time.Now()}
		body := st.wrapBody(w, bodyRequest(io.NopCloser(strings.NewReader("abcdef"))), timeoutServer(time.Minute, 0))
		_, _ = body.Read(make([]byte, 2))
		st.endBody() // the handler returned; the transport still reads
		calls := len(w.deadlines())
		if !w.deadlines()[calls-1].IsZero() {
			t.Fatal("the handler's end did not clear the deadline")
		}
		_, _ = io.ReadAll(body)
		body.Close()
		if len(w.deadlines()) != calls {
			t.Fatalf("%d deadline calls after the handler returned", len(w.deadlines())-calls)
		}
	})

	t.Run("a writer without deadlines only counts", func(t *testing.T) {
		st := &reqState{start: time.Now()}
		body := st.wrapBody(httptest.NewRecorder(), bodyRequest(io.NopCloser(strings.NewReader("abc"))), timeoutServer(time.Minute, 0))
		if got, err := io.ReadAll(body); err != nil || string(got) != "abc" || st.bodyRead.Load() != 3 {
			t.Fatalf("read %q, %v, counted %d", got, err, st.bodyRead.Load())
		}
	})
}

// Through a whole configuration: a request without a body never reaches the
// deadline code; one with a body has its deadline cleared by the end.
func TestRuntimeBodyDeadlines(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	rt, err := buildRuntimeFromYAML(t, fmt.Sprintf(`version: 1
access_log: {output: "off"}
server: {body_read_timeout: 1m}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, strings.TrimPrefix(up.URL, "http://")))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		method    string
		body      io.Reader
		wantCalls bool
	}{
		{"GET without a body", http.MethodGet, nil, false},
		{"POST with an empty body", http.MethodPost, http.NoBody, false},
		{"POST with a body", http.MethodPost, strings.NewReader("hello"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
			req := httptest.NewRequest(tt.method, "/x", tt.body)
			if tt.body == http.NoBody {
				req.Body, req.ContentLength = http.NoBody, 0
			}
			rt.ServeHTTP(w, req)
			if w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			calls := w.deadlines()
			if !tt.wantCalls && len(calls) != 0 {
				t.Fatalf("%d deadline calls for a request without a body", len(calls))
			}
			if tt.wantCalls && (len(calls) == 0 || !calls[len(calls)-1].IsZero()) {
				t.Fatalf("deadlines %v: want some, the last one cleared", calls)
			}
		})
	}
}

// BenchmarkBodyReadTimeout: the cost of moving the read deadline before
// every body read, over real HTTP/1.1 connections (edge and upstream on
// loopback), with body_read_timeout off and on.
//
//	go test -run '^$' -bench BenchmarkBodyReadTimeout -benchtime 2000x ./gateway
func BenchmarkBodyReadTimeout(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer up.Close()
	for _, timeout := range []string{"0s", "30s"} {
		for _, size := range []int{1 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("timeout=%s/body=%dKiB", timeout, size>>10), func(b *testing.B) {
				f, err := routes.Parse("bench.yaml", []byte(fmt.Sprintf(`version: 1
access_log: {output: "off"}
server: {body_read_timeout: %s}
upstreams:
  u: {endpoints: [%q]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u}
`, timeout, strings.TrimPrefix(up.URL, "http://"))))
				if err != nil {
					b.Fatal(err)
				}
				rt, err := buildRuntime(f, buildDeps{metrics: newMetrics(promRegistry())})
				if err != nil {
					b.Fatal(err)
				}
				defer rt.close()
				edge := httptest.NewServer(rt)
				defer edge.Close()
				client := edge.Client()
				body := strings.Repeat("x", size)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for range b.N {
					resp, err := client.Post(edge.URL+"/", "application/octet-stream", strings.NewReader(body))
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		}
	}
}

// bodyRequest is an HTTP/1.1 POST carrying body, as the server hands it to
// the edge.
func bodyRequest(body io.ReadCloser) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Body = body
	return r
}
