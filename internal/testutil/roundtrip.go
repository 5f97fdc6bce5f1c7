package testutil

import (
	"context"
	"io"
	"net/http"
	"testing"
)

// RoundTripGet sends a GET for url through rt with the header pairs hdr
// and reads the whole body.
func RoundTripGet(t testing.TB, rt http.RoundTripper, ctx context.Context, url string, hdr ...string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}
