package routes

import (
	"strings"
	"testing"
)

const k8sOnly = `version: 1
providers:
  kubernetes: {}
`

func TestKubernetesProviderValidation(t *testing.T) {
	tests := []struct {
		name string
		file string
		want string // "" accepts the file; otherwise a substring of the errors
	}{
		{"absent", base, ""},
		{"defaults, no routes of its own", k8sOnly, ""},
		{"all keys", base + "providers:\n  kubernetes: {gateway_class: edge.example, namespaces: [team-a, b], kubeconfig: /etc/kube.conf}\n", ""},
		{"bad class", base + "providers:\n  kubernetes: {gateway_class: Edge_Class}\n", `providers.kubernetes.gateway_class: "Edge_Class" is not a Kubernetes object name`},
		{"bad namespace", base + "providers:\n  kubernetes: {namespaces: [ok, Not.OK]}\n", `t.yaml:10:33: providers.kubernetes.namespaces[1]: "Not.OK" is not a namespace name`},
		{"namespace twice", base + "providers:\n  kubernetes: {namespaces: [a, a]}\n", `namespaces[1]: namespace "a" is listed twice`},
		{"unknown key", base + "providers:\n  kubernetes: {class: x}\n", "providers.kubernetes.class: unknown key"},
		{"gateways", base + "providers:\n  kubernetes: {gateways: [infra/public, infra/internal.v2]}\n", ""},
		{"gateway without namespace", base + "providers:\n  kubernetes: {gateways: [infra/public, public]}\n", `t.yaml:10:41: providers.kubernetes.gateways[1]: "public" is not NAMESPACE/NAME of a Gateway`},
		{"gateway bad namespace", base + "providers:\n  kubernetes: {gateways: [Infra/public]}\n", `gateways[0]: "Infra/public" is not NAMESPACE/NAME`},
		{"gateway bad name", base + "providers:\n  kubernetes: {gateways: [infra/Public_1]}\n", `gateways[0]: "infra/Public_1" is not NAMESPACE/NAME`},
		{"gateway empty name", base + "providers:\n  kubernetes: {gateways: [infra/]}\n", `gateways[0]: "infra/" is not NAMESPACE/NAME`},
		{"gateway three parts", base + "providers:\n  kubernetes: {gateways: [a/b/c]}\n", `gateways[0]: "a/b/c" is not NAMESPACE/NAME`},
		{"gateway twice", base + "providers:\n  kubernetes: {gateways: [infra/public, infra/public]}\n", `t.yaml:10:41: providers.kubernetes.gateways[1]: Gateway "infra/public" is listed twice`},
		{"gateway unwatched namespace", base + "providers:\n  kubernetes: {namespaces: [apps], gateways: [infra/public]}\n", `gateways[0]: namespace "infra" is not among providers.kubernetes.namespaces`},
		{"gateways not a list", base + "providers:\n  kubernetes: {gateways: infra/public}\n", "providers.kubernetes.gateways"},
		{"unknown provider", base + "providers:\n  consul: {}\n", "providers.consul: unknown key"},
		{"file route in the provider's names", k8sOnly + "upstreams:\n  a: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: k8s.x, upstream: a}\n", `routes[0].name: "k8s.x": names beginning with "k8s." are the Kubernetes provider's`},
		{"file upstream in the provider's names", k8sOnly + "upstreams:\n  k8s.a: {endpoints: [\"127.0.0.1:1\"]}\n", `upstreams.k8s.a: "k8s.a": names beginning`},
		{"no routes without the provider", "version: 1\n", "no routes"},
		{"status ip", base + "providers:\n  kubernetes: {status_address: {ip: 203.0.113.7}}\n", ""},
		{"status ipv6", base + "providers:\n  kubernetes: {status_address: {ip: \"2001:db8::7\"}}\n", ""},
		{"status hostname", base + "providers:\n  kubernetes: {status_address: {hostname: edge.example.com}}\n", ""},
		{"status service", base + "providers:\n  kubernetes: {namespaces: [edge], status_address: {service: edge/causeway}}\n", ""},
		{"status none", base + "providers:\n  kubernetes: {status_address: {}}\n", "providers.kubernetes.status_address: set exactly one of ip, hostname or service"},
		{"status two", base + "providers:\n  kubernetes: {status_address: {ip: 203.0.113.7, hostname: a.example}}\n", "set exactly one of ip, hostname or service"},
		{"status bad ip", base + "providers:\n  kubernetes: {status_address: {ip: 203.0.113}}\n", `status_address.ip: "203.0.113" is not an IP address`},
		{"status zone ip", base + "providers:\n  kubernetes: {status_address: {ip: \"fe80::1%eth0\"}}\n", `is not an IP address`},
		{"status wildcard hostname", base + "providers:\n  kubernetes: {status_address: {hostname: \"*.example.com\"}}\n", `status_address.hostname: "*.example.com" is not a DNS name`},
		{"status hostname with port", base + "providers:\n  kubernetes: {status_address: {hostname: \"a.example:80\"}}\n", `is not a DNS name`},
		{"status hostname an ip", base + "providers:\n  kubernetes: {status_address: {hostname: 10.0.0.1}}\n", `"10.0.0.1" is an IP address: use ip`},
		{"status service form", base + "providers:\n  kubernetes: {status_address: {service: causeway}}\n", `status_address.service: "causeway" is not NAMESPACE/NAME of a Service`},
		{"status service unwatched", base + "providers:\n  kubernetes: {namespaces: [apps], status_address: {service: edge/causeway}}\n", `namespace "edge" is not among providers.kubernetes.namespaces`},
		{"status unknown key", base + "providers:\n  kubernetes: {status_address: {ipaddr: 1.2.3.4}}\n", `status_address.ipaddr: unknown key`},
		{"inbound port", base + "providers:\n  kubernetes: {inbound_port: 16443}\n", ""},
		{"inbound port out of range", base + "providers:\n  kubernetes: {inbound_port: 70000}\n", "providers.kubernetes.inbound_port: must be a port, 1 to 65535 (found 70000)"},
		{"inbound port negative", base + "providers:\n  kubernetes: {inbound_port: -1}\n", "providers.kubernetes.inbound_port: must be a port, 1 to 65535 (found -1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.file))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestKubernetesProviderDefaults(t *testing.T) {
	f, err := Parse("dir/t.yaml", []byte(base+"providers:\n  kubernetes: {kubeconfig: kube.conf}\n"))
	if err != nil {
		t.Fatal(err)
	}
	k := f.Providers.Kubernetes
	if k.GatewayClass != DefaultGatewayClass || k.Kubeconfig != "dir/kube.conf" || len(k.Namespaces) != 0 || k.InboundPort != DefaultSidecarInboundPort {
		t.Fatalf("defaults: %+v", k)
	}
}

func TestMerge(t *testing.T) {
	f, err := Parse("dir/t.yaml", []byte(base+"providers:\n  kubernetes: {kubeconfig: kube.conf}\n"))
	if err != nil {
		t.Fatal(err)
	}
	frag := Fragment{
		Upstreams: map[string]Upstream{"k8s.ns.web": {Endpoints: []string{"10.0.0.1:80"}}},
		Routes:    []Route{{Name: "k8s.ns.web.0", Match: Match{Host: "Web.Example", PathPrefix: "/"}, Upstream: "k8s.ns.web"}},
	}
	m, err := f.Merge(frag)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Routes) != 2 || len(f.Routes) != 1 || len(f.Upstreams) != 1 {
		t.Fatalf("merge changed the file or lost routes: file %d routes %d upstreams, merged %d routes", len(f.Routes), len(f.Upstreams), len(m.Routes))
	}
	u := m.Upstreams["k8s.ns.web"]
	if u.Balance != DefaultBalance || u.Timeout.D() != DefaultUpstreamTimeout || m.Routes[1].Match.Host != "web.example" {
		t.Fatalf("the fragment was not defaulted: %+v %+v", u, m.Routes[1].Match)
	}
	if m.Path != "dir/t.yaml" || m.Providers.Kubernetes.Kubeconfig != "dir/kube.conf" {
		t.Fatalf("paths resolved twice or lost: %q %q", m.Path, m.Providers.Kubernetes.Kubeconfig)
	}

	t.Run("refused", func(t *testing.T) {
		tests := []struct {
			name string
			frag Fragment
			want string
		}{
			{"upstream collision", Fragment{Upstreams: map[string]Upstream{"orders": {Endpoints: []string{"10.0.0.1:80"}}}}, "upstreams.orders: defined by the file and by a provider"},
			{"plugin collision", Fragment{Plugins: map[string]PluginInst{}, Upstreams: nil, Routes: []Route{{Name: "k8s.r", Upstream: "nope"}}}, `undefined upstream "nope"`},
			{"a file upstream without endpoints", Fragment{Upstreams: map[string]Upstream{"plain": {}}}, "upstreams.plain: needs endpoints or dns"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := f.Merge(tt.frag)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Merge: %v, want an error containing %q", err, tt.want)
				}
			})
		}
	})

	t.Run("first of equal matches wins", func(t *testing.T) {
		m, err := f.Merge(Fragment{
			Upstreams: map[string]Upstream{"k8s.u": {Endpoints: []string{"10.0.0.1:80"}}, "k8s.empty": {}},
			Routes: []Route{
				{Name: "k8s.same-as-file", Match: Match{PathPrefix: "/orders"}, Upstream: "k8s.u"},
				{Name: "k8s.older", Match: Match{Path: "/x"}, Upstream: "k8s.u"},
				{Name: "k8s.newer", Match: Match{Path: "/x"}, Upstream: "k8s.empty"},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range m.Routes {
			names = append(names, r.Name)
		}
		if got := strings.Join(names, ","); got != "orders,k8s.older" {
			t.Fatalf("routes %s, want orders,k8s.older", got)
		}
		w := m.Warnings.Error()
		if !strings.Contains(w, `"k8s.same-as-file" matches exactly the same requests as "orders"`) || !strings.Contains(w, `"k8s.newer" matches exactly the same requests as "k8s.older"`) {
			t.Fatalf("warnings %q", w)
		}
	})
}
