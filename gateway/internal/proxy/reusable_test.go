package proxy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causewayhq/causeway/internal/testutil"
	"github.com/causewayhq/causeway/routes"
)

// TestReusable: an upstream is taken over by the next configuration only
// when nothing it was built from changed: each setting (pointer fields and
// maps by value), the endpoints it serves now, the TLS source, and the
// content of its tls.ca_file. Every case that changes something must not
// be reusable; the ones that change nothing must be.
func TestReusable(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, testutil.NewCA(t).PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	series := NewHealthSeries(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "h"}, []string{"upstream", "endpoint"}))
	base := func() routes.Upstream {
		return routes.Upstream{
			Endpoints: []string{"10.0.0.2:80", "10.0.0.1:80"}, Balance: "round_robin", Scheme: "https",
			TLS:            &routes.UpstreamTLS{ServerName: "b.example", CAFile: caFile},
			HealthCheck:    &routes.HealthCheck{Path: "/h", Interval: routes.Duration(time.Hour), HealthyThreshold: 2, UnhealthyThreshold: 2},
			Timeout:        routes.Duration(time.Second),
			ConnectTimeout: routes.Duration(time.Second),
			Retries:        &routes.Retries{Attempts: 2, On: []string{"connect-failure"}},
			CircuitBreaker: &routes.CircuitBreaker{Consecutive5xx: 3, EjectFor: routes.Duration(time.Second), MaxEjectedPercent: 50},
			Weights:        map[string]int{"10.0.0.1:80": 2},
		}
	}
	deps := func() Deps {
		return Deps{Pools: NewTransportPools(), TLSFor: UpstreamTLSConfig, TLSKey: "src1",
			Hooks: Hooks{HealthGauge: series}}
	}
	for _, tc := range []struct {
		desc   string
		change func(c *routes.Upstream, d *Deps)
		// before runs after the upstream is built (files, in-place).
		before func(t *testing.T, u *Upstream)
		want   bool
	}{
		{desc: "nothing changed", change: func(*routes.Upstream, *Deps) {}, want: true},
		{desc: "a fresh copy of every pointer and map, same values", change: func(c *routes.Upstream, _ *Deps) {
			tls, hc, r, cb := *c.TLS, *c.HealthCheck, *c.Retries, *c.CircuitBreaker
			c.TLS, c.HealthCheck, c.Retries, c.CircuitBreaker = &tls, &hc, &r, &cb
			c.Weights = map[string]int{"10.0.0.1:80": 2}
		}, want: true},
		{desc: "endpoints in another order, one repeated, spaces", change: func(c *routes.Upstream, _ *Deps) {
			c.Endpoints = []string{" 10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80"}
		}, want: true},
		{desc: "an endpoint added", change: func(c *routes.Upstream, _ *Deps) { c.Endpoints = append(c.Endpoints, "10.0.0.3:80") }},
		{desc: "an endpoint removed", change: func(c *routes.Upstream, _ *Deps) { c.Endpoints = c.Endpoints[:1] }},
		{desc: "endpoints changed in place since: the new set is what it serves", change: func(c *routes.Upstream, _ *Deps) {
			c.Endpoints = []string{"10.0.0.9:80"}
		}, before: func(t *testing.T, u *Upstream) {
			if err := u.SetEndpoints([]string{"10.0.0.9:80"}); err != nil {
				t.Fatal(err)
			}
		}, want: true},
		{desc: "endpoints changed in place since, the old set given", change: func(*routes.Upstream, *Deps) {}, before: func(t *testing.T, u *Upstream) {
			if err := u.SetEndpoints([]string{"10.0.0.9:80"}); err != nil {
				t.Fatal(err)
			}
		}},
		{desc: "a weight", change: func(c *routes.Upstream, _ *Deps) { c.Weights["10.0.0.1:80"] = 3 }},
		{desc: "weights gone", change: func(c *routes.Upstream, _ *Deps) { c.Weights = nil }},
		{desc: "balance", change: func(c *routes.Upstream, _ *Deps) { c.Balance = "least_request" }},
		{desc: "health check path, behind its pointer", change: func(c *routes.Upstream, _ *Deps) {
			hc := *c.HealthCheck
			hc.Path = "/other"
			c.HealthCheck = &hc
		}},
		{desc: "health check removed", change: func(c *routes.Upstream, _ *Deps) { c.HealthCheck = nil }},
		{desc: "ejection time", change: func(c *routes.Upstream, _ *Deps) {
			cb := *c.CircuitBreaker
			cb.EjectFor = routes.Duration(2 * time.Second)
			c.CircuitBreaker = &cb
		}},
		{desc: "retry conditions, a slice behind a pointer", change: func(c *routes.Upstream, _ *Deps) {
			r := *c.Retries
			r.On = []string{"connect-failure", "5xx"}
			c.Retries = &r
		}},
		{desc: "timeout", change: func(c *routes.Upstream, _ *Deps) { c.Timeout = routes.Duration(2 * time.Second) }},
		{desc: "server name", change: func(c *routes.Upstream, _ *Deps) {
			tl := *c.TLS
			tl.ServerName = "c.example"
			c.TLS = &tl
		}},
		{desc: "the CA file's content, same path", change: func(*routes.Upstream, *Deps) {}, before: func(t *testing.T, _ *Upstream) {
			if err := os.WriteFile(caFile, testutil.NewCA(t).PEM(), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{desc: "another TLS source (mesh identity source)", change: func(_ *routes.Upstream, d *Deps) { d.TLSKey = "src2" }},
		{desc: "another health series", change: func(_ *routes.Upstream, d *Deps) {
			d.Hooks.HealthGauge = NewHealthSeries(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "h2"}, []string{"upstream", "endpoint"}))
		}},
		{desc: "mirroring", change: func(c *routes.Upstream, _ *Deps) {
			c.Mirror = &routes.Mirror{Upstream: "shadow", Percent: 100, MaxInflight: 1}
		}},
		{desc: "dns", change: func(c *routes.Upstream, _ *Deps) { c.Endpoints, c.DNS = nil, "svc.example:80" }},
		{desc: "endpoints file", change: func(c *routes.Upstream, _ *Deps) { c.Endpoints, c.EndpointsFile = nil, filepath.Join(dir, "eps") }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := deps()
			u, err := New("orders", base(), d)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			if tc.before != nil {
				tc.before(t, u)
			}
			cfg := base()
			tc.change(&cfg, &d)
			if got := u.Reusable("orders", cfg, d); got != tc.want {
				t.Fatalf("Reusable = %t, want %t", got, tc.want)
			}
			if u.Reusable("payments", base(), deps()) {
				t.Fatal("reusable under another name")
			}
		})
	}
}
