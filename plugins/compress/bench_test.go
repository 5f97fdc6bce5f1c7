package compress

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/plugins/plugintest"
)

// BenchmarkCompress measures compressing a 64 KiB JSON response in process,
// per encoding and level; bytes/s is of the uncompressed body.
func BenchmarkCompress(b *testing.B) {
	// Varied records from a fixed seed: an API listing, not one repeated line.
	rnd := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa")
	var sb strings.Builder
	for sb.Len() < 64<<10 {
		fmt.Fprintf(&sb, `{"id":%d,"name":"%s %s","stock":%d,"price":%d.%02d,"updated":"2026-%02d-%02dT%02d:%02d:00Z"},`,
			rnd.IntN(1e9), words[rnd.IntN(len(words))], words[rnd.IntN(len(words))], rnd.IntN(500), rnd.IntN(1000), rnd.IntN(100),
			1+rnd.IntN(12), 1+rnd.IntN(28), rnd.IntN(24), rnd.IntN(60))
	}
	body := sb.String()[:64<<10]
	for _, enc := range []string{"identity", "gzip", "zstd"} {
		for _, level := range []string{"fastest", "default"} {
			b.Run(enc+"/"+level, func(b *testing.B) {
				inst, set, err := plugintest.New("compress", "level: "+level)
				if err != nil {
					b.Fatal(err)
				}
				defer set.Close()
				h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, body)
				}))
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.Header.Set("Accept-Encoding", enc)
				var out int
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					out = w.Body.Len()
				}
				b.ReportMetric(float64(out)/float64(len(body)), "ratio")
			})
		}
	}
}
