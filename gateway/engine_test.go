package gateway

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/causewayhq/causeway/gateway/internal/h1server"
	"github.com/causewayhq/causeway/routes"
)

func TestHTTP1Engine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		file    string
		env     map[string]string
		want    string
		wantErr string
	}{
		{"default", "", nil, "causeway", ""},
		{"the environment picks net/http", "", map[string]string{HTTP1EngineEnv: "net/http"}, "net/http", ""},
		{"the environment names the default", "", map[string]string{HTTP1EngineEnv: "causeway"}, "causeway", ""},
		{"an empty variable is the default", "", map[string]string{HTTP1EngineEnv: ""}, "causeway", ""},
		{"the file wins over the environment", "net/http", map[string]string{HTTP1EngineEnv: "causeway"}, "net/http", ""},
		{"the file wins the other way too", "causeway", map[string]string{HTTP1EngineEnv: "net/http"}, "causeway", ""},
		{"the file alone", "causeway", nil, "causeway", ""},
		{"the file alone, net/http", "net/http", nil, "net/http", ""},
		{"a bad variable is refused", "", map[string]string{HTTP1EngineEnv: "fasthttp"}, "", `CAUSEWAY_HTTP1_ENGINE: must be "net/http" or "causeway" (found "fasthttp")`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := http1Engine(routes.Server{HTTP1Engine: tc.file}, routes.MapEnv(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestNewDataServerEngine(t *testing.T) {
	t.Parallel()
	srv := routes.Server{MaxHeaderBytes: 4096}
	log := slog.New(slog.DiscardHandler)
	ours, ok := newDataServer(log, srv, routes.HTTP1EngineCauseway, serverSpec{h2c: true}).(*h1server.Server)
	if !ok || !ours.H2C || ours.MaxHeaderBytes != 4096 {
		t.Fatalf("the causeway engine: %#v", ours)
	}
	std, ok := newDataServer(log, srv, routes.HTTP1EngineNetHTTP, serverSpec{h2c: true}).(netHTTPServer)
	if !ok || std.Protocols == nil || !std.Protocols.UnencryptedHTTP2() || std.lim.MaxHeaderBytes != 4096 {
		t.Fatalf("the net/http engine: %#v", std)
	}
}
