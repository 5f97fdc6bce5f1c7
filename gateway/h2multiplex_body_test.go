package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// halfThenHold hands out the first half of its bytes, then blocks until
// its request is cancelled: a client that gives up mid-body (the HTTP/2
// client then resets the stream).
type halfThenHold struct {
	data []byte
	ctx  context.Context
	sent chan struct{} // closed once the half is out
	once sync.Once
}

func (b *halfThenHold) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	b.once.Do(func() { close(b.sent) })
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

// 100 POSTs at a time on one h2c connection, multiplexed onto the edge's
// HTTP/1.1 connections to one upstream, 10 rounds: bodies of 0-64 KiB with
// and without a declared length, and one stream in ten cancelled half way
// through its body (RST_STREAM). Each stream carries its tag in the path;
// the upstream records, per tag, the digest of a body it read to its end.
// Every answered stream must get its own tag and the digest of its own
// body, and a cancelled stream's body must never have been read whole: no
// body of one stream with the head of another, no cut body taken as whole.
// A guard: no defect found. It fails (other streams' digests) when the body
// writer's buffer goes back to its pool while still in use. A writer that
// takes a cancelled body's error for its end is not enough to fail it: the
// request's cancellation closes the upstream connection first.
func TestH2MultiplexedBodiesToHTTP1Upstream(t *testing.T) {
	var mu sync.Mutex
	read := map[string]string{} // tag -> digest of a body read whole
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		mu.Lock()
		read[r.URL.Path] = d
		mu.Unlock()
		_, _ = fmt.Fprintf(w, "%s %s", r.URL.Path, d)
	}))
	t.Cleanup(srv.Close)
	te := startEdge(t, edgeConfig(strings.TrimPrefix(srv.URL, "http://")))
	client := h2cClient()
	defer client.CloseIdleConnections()
	const rounds, streams = 10, 100
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, streams)
		for s := range streams {
			wg.Go(func() {
				rng := mrand.New(mrand.NewPCG(uint64(round), uint64(s)))
				body := randBody(rng, rng.IntN(64<<10+1))
				sum := sha256.Sum256(body)
				want := hex.EncodeToString(sum[:])
				tag := fmt.Sprintf("/r%d/s%d", round, s)
				known := rng.IntN(2) == 0
				if s%10 == 3 && len(body) > 1 {
					ctx, cancel := context.WithCancel(context.Background())
					hb := &halfThenHold{data: body[:len(body)/2], ctx: ctx, sent: make(chan struct{})}
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, te.url+tag, hb)
					if known {
						req.ContentLength = int64(len(body))
					}
					done := make(chan struct{})
					go func() {
						defer close(done)
						if resp, err := client.Do(req); err == nil {
							resp.Body.Close()
							errs <- fmt.Errorf("%s: a cancelled request was answered %d", tag, resp.StatusCode)
						}
					}()
					<-hb.sent
					cancel()
					<-done
					return
				}
				req, _ := http.NewRequest(http.MethodPost, te.url+tag, &trickleReader{data: body, rng: rng})
				if known {
					req.ContentLength = int64(len(body))
				}
				resp, err := client.Do(req)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", tag, err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || string(got) != tag+" "+want {
					errs <- fmt.Errorf("%s: status %d, answer %q, err %w; want %q", tag, resp.StatusCode, got, err, tag+" "+want)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
	}
	// The upstream may still be reading a cancelled body when its client
	// has its error: Close waits for every handler to return.
	srv.Close()
	mu.Lock()
	defer mu.Unlock()
	for round := range rounds {
		for s := 3; s < streams; s += 10 {
			if d, ok := read[fmt.Sprintf("/r%d/s%d", round, s)]; ok {
				t.Errorf("round %d stream %d: the upstream read the whole body (%s) of a stream cancelled half way", round, s, d)
			}
		}
	}
}

// trickleReader hands out its bytes in reads of random sizes.
type trickleReader struct {
	data []byte
	rng  *mrand.Rand
}

func (r *trickleReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), 1+r.rng.IntN(20<<10))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}
