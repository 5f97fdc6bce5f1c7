package h1server

import (
	"bufio"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/causewayhq/causeway/internal/testutil"
)

// trivial is the handler of the benchmarks: a small fixed answer.
var trivial = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("hello, world"))
})

// BenchmarkServeKeepAlive: one keep-alive connection over loopback, one
// GET after another through a trivial handler, this engine against
// net/http's server. The client is a minimal raw one so that the numbers
// are the servers'.
func BenchmarkServeKeepAlive(b *testing.B) {
	bothEngines(b, runKeepAlive)
}

func runKeepAlive(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReaderSize(c, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for range b.N {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if err := testutil.ReadSizedResponse(br); err != nil {
			b.Fatal(err)
		}
	}
	// The process's CPU time (server and client, user and system) per
	// request: on a machine shared with other work, ns/op (latency) swings
	// with the scheduler, CPU time much less.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkIdleConnMemory reports the heap and stack the server holds per
// idle keep-alive connection (each has served one request), this engine
// against net/http's server. b.N is ignored: the figure is per connection.
func BenchmarkIdleConnMemory(b *testing.B) {
	const conns = 500
	measure := func(b *testing.B, addr string) {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var cs []net.Conn
		defer func() {
			for _, c := range cs {
				c.Close()
			}
		}()
		req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
		for range conns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			cs = append(cs, c)
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			if err := testutil.ReadSizedResponse(bufio.NewReader(c)); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond) // every server goroutine back to waiting
		runtime.GC()
		runtime.ReadMemStats(&after)
		// The client side's conns and readers are counted too; they are
		// the same for both servers.
		heap := float64(after.HeapInuse) - float64(before.HeapInuse)
		stack := float64(after.StackInuse) - float64(before.StackInuse)
		b.ReportMetric((heap+stack)/conns/1024, "KiB/conn")
		b.ReportMetric(heap/conns/1024, "heap-KiB/conn")
		b.ReportMetric(stack/conns/1024, "stack-KiB/conn")
		b.ReportMetric(0, "ns/op")
	}
	bothEngines(b, measure)
}

// bothEngines runs bench against this engine's server and net/http's,
// each serving the trivial handler on loopback.
func bothEngines(b *testing.B, bench func(b *testing.B, addr string)) {
	b.Run("engine=causeway", func(b *testing.B) {
		_, addr := serveOurs(b, trivial, nil)
		bench(b, addr)
	})
	b.Run("engine=net-http", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		s := &http.Server{Handler: trivial, ErrorLog: log.New(io.Discard, "", 0)}
		go func() { _ = s.Serve(ln) }()
		defer s.Close()
		bench(b, ln.Addr().String())
	})
}

// BenchmarkServeKeepAliveParkAtOnce is BenchmarkServeKeepAlive with every
// wait for the next request parked at once (parkAfter < 0): what parking
// costs a request, the figure defaultParkAfter is chosen by.
func BenchmarkServeKeepAliveParkAtOnce(b *testing.B) {
	_, addr := serveOurs(b, trivial, func(s *Server) { s.parkAfter = -1 })
	runKeepAlive(b, addr)
}
