package routes

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestEndpointsChanged(t *testing.T) {
	base := func() Fragment {
		return Fragment{
			Upstreams: map[string]Upstream{
				"k8s.a.web.80": {Endpoints: []string{"10.0.0.1:80", "10.0.0.2:80"}},
				"k8s.a.api.80": {Endpoints: []string{"10.0.1.1:80"}},
				"k8s.a.ext.80": {DNS: "ext.example:80"},
			},
			Routes: []Route{{Name: "k8s.a.r", Match: Match{Host: "a.example", PathPrefix: "/", Headers: map[string]string{"X": "1"}}, Upstream: "k8s.a.web.80"}},
		}
	}
	tests := []struct {
		name   string
		change func(*Fragment)
		want   map[string][]string // nil: not endpoints only
	}{
		{name: "nothing", change: func(*Fragment) {}, want: map[string][]string{}},
		{name: "an endpoint added", change: func(f *Fragment) {
			f.Upstreams["k8s.a.web.80"] = Upstream{Endpoints: []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}}
		}, want: map[string][]string{"k8s.a.web.80": {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}}},
		{name: "two upstreams, one emptied", change: func(f *Fragment) {
			f.Upstreams["k8s.a.web.80"] = Upstream{Endpoints: []string{"10.0.0.2:80"}}
			f.Upstreams["k8s.a.api.80"] = Upstream{}
		}, want: map[string][]string{"k8s.a.web.80": {"10.0.0.2:80"}, "k8s.a.api.80": nil}},
		{name: "an upstream setting besides endpoints", change: func(f *Fragment) {
			f.Upstreams["k8s.a.web.80"] = Upstream{Endpoints: []string{"10.0.0.9:80"}, Scheme: "https"}
		}},
		{name: "a setting alone", change: func(f *Fragment) {
			f.Upstreams["k8s.a.api.80"] = Upstream{Endpoints: []string{"10.0.1.1:80"}, Balance: "ring_hash"}
		}},
		{name: "an upstream added", change: func(f *Fragment) { f.Upstreams["k8s.a.new.80"] = Upstream{} }},
		{name: "an upstream renamed", change: func(f *Fragment) {
			f.Upstreams["k8s.a.api2.80"] = f.Upstreams["k8s.a.api.80"]
			delete(f.Upstreams, "k8s.a.api.80")
		}},
		{name: "endpoints where dns was", change: func(f *Fragment) {
			f.Upstreams["k8s.a.ext.80"] = Upstream{DNS: "ext.example:80", Endpoints: []string{"10.0.2.1:80"}}
		}},
		{name: "a route's match", change: func(f *Fragment) { f.Routes[0].Match.Headers = map[string]string{"X": "2"} }},
		{name: "a route added", change: func(f *Fragment) { f.Routes = append(f.Routes, Route{Name: "k8s.a.r2"}) }},
		{name: "a plugin", change: func(f *Fragment) { f.Plugins = map[string]PluginInst{"k8s.p": {Use: "cors"}} }},
		{name: "a certificate", change: func(f *Fragment) { f.Certificates = []InlineCertificate{{}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := base()
			next.Upstreams = maps.Clone(next.Upstreams)
			tt.change(&next)
			got, ok := EndpointsChanged(base(), next)
			if ok != (tt.want != nil) {
				t.Fatalf("endpoints only: %t, want %t", ok, tt.want != nil)
			}
			if !maps.EqualFunc(got, tt.want, slices.Equal) {
				t.Fatalf("changed %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckEndpoints(t *testing.T) {
	tests := []struct {
		name    string
		up      string
		eps     []string
		wantErr string
	}{
		{name: "addresses", up: "k8s.a.web.80", eps: []string{"10.0.0.1:80", "[fd00::1]:8080"}},
		{name: "none, from the provider", up: "k8s.a.web.80"},
		{name: "none, from the file", up: "web", wantErr: "needs endpoints"},
		{name: "no port", up: "k8s.a.web.80", eps: []string{"10.0.0.1"}, wantErr: "endpoints[0]"},
		{name: "a bad port", up: "k8s.a.web.80", eps: []string{"10.0.0.1:80", "10.0.0.2:0"}, wantErr: "endpoints[1]: \"10.0.0.2:0\" has an invalid port"},
		{name: "twice", up: "k8s.a.web.80", eps: []string{"10.0.0.1:80", " 10.0.0.1:80"}, wantErr: "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckEndpoints(tt.up, tt.eps)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}
