package caller

import (
	"fmt"
	"testing"
	"time"
)

// The per-hop cost of caller tokens: signing at the edge, verifying at a
// sidecar, each with and without its cache (docs/mesh.md quotes these).
func BenchmarkMint(b *testing.B) {
	w := newWorld(b)
	for _, cache := range []time.Duration{0, 30 * time.Second} {
		b.Run(fmt.Sprintf("cache=%s", cache), func(b *testing.B) {
			m := NewMinter(w.edge, MintOptions{CacheFor: cache})
			aud := mustID(aID)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Mint(alice, aud); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	w := newWorld(b)
	m := NewMinter(w.edge, MintOptions{})
	b.Run("cold", func(b *testing.B) {
		// Every token new to the verifier: chain, signature, claims.
		toks := make([]string, 512)
		for i := range toks {
			toks[i], _ = m.Mint(alice, mustID(aID))
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			v := w.verifier(aID, VerifyOptions{Now: time.Now})
			if _, err := v.Verify(toks[i%len(toks)], mustID(edgeID)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("cached", func(b *testing.B) {
		tok, _ := m.Mint(alice, mustID(aID))
		v := w.verifier(aID, VerifyOptions{Now: time.Now})
		peer := mustID(edgeID)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok, peer); err != nil {
				b.Fatal(err)
			}
		}
	})
}
