package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A browser-sized GET: the parser against net/http's own reading of the
// same head (go test -run '^$' -bench . -benchmem ./gateway/internal/h1).
const benchHead = "GET /api/v1/orders/42?expand=items HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n" +
	"Accept: application/json\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-GB,en;q=0.9\r\n" +
	"Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln\r\nCookie: session=abc; theme=dark\r\nConnection: keep-alive\r\n\r\n"

func BenchmarkParse(b *testing.B) {
	buf := []byte(benchHead)
	var r Request
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(buf, &r, DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNetHTTPReadRequest(b *testing.B) {
	sr := strings.NewReader(benchHead)
	br := bufio.NewReader(sr)
	b.SetBytes(int64(len(benchHead)))
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(benchHead)
		br.Reset(sr)
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChunked(b *testing.B) {
	body := strings.Repeat("1000\r\n"+strings.Repeat("x", 4096)+"\r\n", 16) + "0\r\n\r\n"
	sr := strings.NewReader(body)
	br := bufio.NewReaderSize(sr, 16<<10)
	var c ChunkedReader
	buf := make([]byte, 32<<10)
	b.SetBytes(64 << 10)
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(body)
		br.Reset(sr)
		c.Reset(br)
		for {
			_, err := c.Read(buf)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
