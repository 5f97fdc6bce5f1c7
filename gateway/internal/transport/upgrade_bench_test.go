package transport

import (
	"net/http"
	"strconv"
	"testing"
)

// BenchmarkTLSUpgradesLearned is the look-up every ordinary request to an
// https upstream makes (TLSUpgrades.speaksH2 for a host already learned),
// from as many goroutines as -cpu allows, over a few endpoints:
//
//	go test -run XXX -bench TLSUpgradesLearned -cpu 1,2 -count 6 ./gateway/internal/transport/
func BenchmarkTLSUpgradesLearned(b *testing.B) {
	s := NewTLSUpgrades(&http.Transport{}, nil)
	b.Cleanup(s.CloseIdleConnections)
	hosts := make([]string, 16)
	for i := range hosts {
		hosts[i] = "10.0.0." + strconv.Itoa(i) + ":443"
		s.learn(hosts[i], i%2 == 0)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+hosts[0]+"/", nil)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			h := hosts[i%len(hosts)]
			h2, err := s.speaksH2(req, h)
			if err != nil || h2 != (i%len(hosts)%2 == 0) {
				b.Errorf("%s: h2 %v, %v", h, h2, err)
				return
			}
			i++
		}
	})
}
