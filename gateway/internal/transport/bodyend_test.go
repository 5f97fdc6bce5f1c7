package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// declaredThenFail hands out every byte its request declares, then blocks
// until release and fails: an HTTP/2 client that sent its whole declared
// body and reset the stream instead of ending it.
type declaredThenFail struct {
	data    []byte
	release chan struct{}
}

func (b *declaredThenFail) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	<-b.release
	return 0, errors.New("stream reset by the client")
}

func (b *declaredThenFail) Close() error { return nil }

// The bytes that complete a Content-Length body are written only once the
// client's body has ended: a body that fails after its last declared byte
// leaves the upstream a short body, over a plain connection and over the
// mesh hop's mTLS alike. The control ends normally and is read whole.
// Without the check (bodySend.confirmEnd) the upstream read every body over
// the 4 KiB write buffer whole.
func TestH1TransportBodyCompletedOnlyAtItsEnd(t *testing.T) {
	noLeaks(t)
	type outcome struct {
		n   int
		err error
	}
	results := make(chan outcome, 1)
	started := make(chan struct{}, 1)
	handler := func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		b, err := io.ReadAll(r.Body)
		results <- outcome{len(b), err}
	}
	plain, _ := countingServer(t, handler)
	m := newMeshTLS(t)
	tlsAddr, _ := m.serve(t, 0, handler)
	pools := []struct {
		name, url string
		h1        *H1
	}{
		{"plain", plain.URL, newTestPool(t, 4, notATimeout)},
		{"mesh mTLS", "https://" + tlsAddr, m.pool(t, 4, notATimeout, sidecarID)},
	}
	for _, p := range pools {
		for _, size := range []int{100, 5000, 40000, 300000} {
			t.Run(fmt.Sprintf("%s/%d", p.name, size), func(t *testing.T) {
				for _, control := range []bool{true, false} {
					body := &declaredThenFail{data: bytes.Repeat([]byte("d"), size), release: make(chan struct{})}
					var rc io.ReadCloser = body
					if control {
						rc = io.NopCloser(strings.NewReader(strings.Repeat("d", size)))
					}
					req, _ := http.NewRequest(http.MethodPost, p.url+"/", rc)
					req.ContentLength = int64(size)
					done := make(chan error, 1)
					go func() {
						resp, err := p.h1.RoundTrip(req)
						if err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
						done <- err
					}()
					<-started
					var got outcome
					if control {
						got = <-results
					} else {
						// Time for bytes written early to arrive (before the
						// fix they did at once); a correct writer holds back
						// the last of them however long this is.
						select {
						case got = <-results:
							close(body.release)
						case <-time.After(50 * time.Millisecond):
							close(body.release)
							got = <-results
						}
					}
					err := <-done
					switch {
					case control && (got.err != nil || got.n != size || err != nil):
						t.Fatalf("control: the upstream read %d of %d bytes (%v), round trip %v", got.n, size, got.err, err)
					case !control && got.err == nil:
						t.Fatalf("the upstream read the whole %d-byte body of a request whose body then failed", got.n)
					case !control && err == nil:
						t.Fatal("the round trip of a failed body succeeded")
					}
				}
			})
		}
	}
}
