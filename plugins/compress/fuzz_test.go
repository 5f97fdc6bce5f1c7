package compress

import (
	"testing"

	"github.com/causewayhq/causeway/plugins/plugintest"
)

// FuzzNegotiate: any Accept-Encoding yields a configured encoding or none,
// and an encoding the header refuses by name with q=0 is never chosen.
func FuzzNegotiate(f *testing.F) {
	for _, s := range []string{"gzip", "zstd;q=0.5, gzip;q=0.9", "*;q=0", "*, zstd;q=0", "gzip;q=", ";;,,", "GZIP;Q=1.0e0"} {
		f.Add(s)
	}
	inst, set, err := plugintest.New("compress", "")
	if err != nil {
		f.Fatal(err)
	}
	defer set.Close()
	c := inst.(*Compress)
	f.Fuzz(func(t *testing.T, header string) {
		got := c.negotiate([]string{header})
		switch got {
		case "":
			return
		case "gzip", "zstd":
		default:
			t.Fatalf("negotiate(%q) = %q", header, got)
		}
		if c.negotiate([]string{header + ", " + got + ";q=0"}) == got {
			t.Fatalf("%q chosen though refused: %q", got, header+", "+got+";q=0")
		}
	})
}
