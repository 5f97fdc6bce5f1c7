package routes

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A value set from ${VAR} is refused by a check after decoding (a bad
// endpoint, URL, address or name): the error keeps file:line:col and the
// key path and shows the value as REDACTED, in whatever check found it.
// Before: decoding masked its own errors, but validation, file checks and
// plugins quoted the value ("hunter2-host" is not host:port) into the log,
// /config's last_reload and `causeway validate`.
func TestValidationErrorsQuoteNoEnvValue(t *testing.T) {
	env := MapEnv(map[string]string{
		"HOST":   "hunter2-host",
		"URL":    "ftp://hunter2.example/jwks",
		"IDP":    "hunter2 idp",
		"UP":     "hunter2-missing",
		"SECRET": "hunter2-secret",
		"FWD":    "hunter2.internal:7001",
	})
	const head = "version: 1\nupstreams:\n  up: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n"
	tests := []struct {
		name    string
		file    string
		sidecar bool
		want    string // the located start of the error
	}{
		{"upstream endpoint", "version: 1\nupstreams:\n  up: {endpoints: [\"${HOST}\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n", false, "t.yaml:3:20: upstreams.up.endpoints[0]: "},
		{"route's upstream name", "version: 1\nupstreams:\n  up: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: \"${UP}\"}\n", false, "t.yaml:5:50: routes[0].upstream: "},
		{"jwks_url, wrong scheme", head + "authenticators:\n  a: {jwt: {issuer: x, algorithms: [RS256], jwks_url: \"${URL}\"}}\n", false, "t.yaml:7:55: authenticators.a.jwt.jwks_url: "},
		{"jwks_url, a variable inside", head + "authenticators:\n  a: {jwt: {issuer: x, algorithms: [RS256], jwks_url: \"https://${IDP}/keys\"}}\n", false, "t.yaml:7:55: authenticators.a.jwt.jwks_url: "},
		{"redis addrs list", head + "redis: {addrs: [\"127.0.0.1:6379\", \"${HOST}\"]}\n", false, "t.yaml:6:35: redis.addrs[1]: "},
		{"trusted proxy", head + "trusted_proxies: [\"${SECRET}\"]\n", false, "t.yaml:6:19: trusted_proxies[0]: "},
		{"admin allowed host", head + "admin: {allowed_hosts: [\"${HOST}:1\"]}\n", false, "t.yaml:6:25: admin.allowed_hosts[0]: "},
		{"otlp endpoint", head + "tracing: {otlp_endpoint: \"${URL}\"}\n", false, "t.yaml:6:26: tracing.otlp_endpoint: "},
		{"ext_authz grpc address", head + "authenticators:\n  a: {ext_authz: {grpc_address: \"${HOST}\"}}\n", false, "t.yaml:7:33: authenticators.a.ext_authz.grpc_address: "},
		{"listen address", head + "listen: {http: \"${HOST}\"}\n", false, "t.yaml:6:16: listen.http: "},
		{"a file that does not exist", head + "tls: {certificates: [{cert_file: \"${SECRET}\", key_file: \"${SECRET}\"}]}\n", false, "t.yaml:6:34: tls.certificates[0].cert_file: "},
		{"sidecar forward_to", strings.Replace(sidecarBase, `forward_to: "127.0.0.1:7001"`, `forward_to: "${FWD}"`, 1), true, "t.yaml:5:15: inbound.forward_to: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.sidecar {
				_, err = ParseSidecarWith("t.yaml", []byte(tt.file), Options{Env: env})
			} else {
				_, err = ParseWith("t.yaml", []byte(tt.file), Options{Env: env, CheckFiles: true})
			}
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, "hunter2") {
				t.Errorf("the error quotes the value from the environment: %s", msg)
			}
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, Redacted) {
				t.Errorf("error %q does not contain %q and %s", msg, tt.want, Redacted)
			}
		})
	}
}

// What a plugin or the server finds after the file is parsed is masked
// too: a plugin's ErrorAt, and an error from building the configuration
// passed through RedactEnv, whatever its type. A value written in the file
// is still quoted, and a short value from the environment is masked at its
// own key only, so that ordinary words of other messages stay.
func TestErrorsAfterParseQuoteNoEnvValue(t *testing.T) {
	env := MapEnv(map[string]string{"ORIGIN": "https://hunter2.example", "REDIS": "redis://hunter2-redis:6379/0", "N": "on"})
	file := "version: 1\n" +
		"upstreams:\n  up: {endpoints: [\"127.0.0.1:1\"]}\n" +
		"routes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n" +
		"redis: {url: \"${REDIS}\"}\n" +
		"plugins:\n  p: {use: x, config: {allow_origins: [\"${ORIGIN}\"], mode: \"${N}\", other: plain-value}}\n"
	f, err := ParseWith("t.yaml", []byte(file), Options{Env: env})
	if err != nil {
		t.Fatal(err)
	}
	raw := f.Plugins["p"].Config
	built := errors.New("dialing redis hunter2-redis:6379: connection refused")
	tests := []struct {
		name     string
		err      error
		want     string
		mustKeep string
	}{
		{"plugin refuses a value from the environment", raw.ErrorAt("allow_origins", "%q: not an origin", "https://hunter2.example"), "t.yaml:8:39: plugins.p.config.allow_origins: \"REDACTED\": not an origin", ""},
		{"plugin refuses a short value at its key", raw.ErrorAt("mode", "mode must be a word (found %q)", "on"), "plugins.p.config.mode: mode must be a word (found \"REDACTED\")", ""},
		{"plugin quotes a value from the file", raw.ErrorAt("other", "%q is not allowed", "plain-value"), `"plain-value" is not allowed`, ""},
		{"a short value elsewhere is left alone", raw.ErrorAt("other", "put it on a list"), "put it on a list", ""},
		{"building: a located error", f.RedactEnv(&Error{File: f.Path, Pos: f.At("redis"), Path: "redis", Msg: built.Error()}), "t.yaml:6:8: redis: dialing redis REDACTED: connection refused", ""},
		{"building: a plain wrapped error", f.RedactEnv(fmt.Errorf("redis: %w", built)), "redis: dialing redis REDACTED: connection refused", ""},
		{"building: Errors", f.RedactEnv(Errors{{File: f.Path, Pos: Pos{6, 14}, Path: "redis.url", Msg: "cannot use redis://hunter2-redis:6379/0"}}), "t.yaml:6:14: redis.url: cannot use REDACTED", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.err.Error()
			if strings.Contains(msg, "hunter2") {
				t.Errorf("the error quotes the value from the environment: %s", msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
		})
	}
	// The masked error still unwraps to what was found.
	if !errors.Is(f.RedactEnv(fmt.Errorf("redis: %w", built)), built) {
		t.Error("the masked error no longer wraps the original")
	}
}

func TestReplaceWord(t *testing.T) {
	tests := []struct{ msg, s, want string }{
		{`"abc" is bad`, "abc", `"REDACTED" is bad`},
		{"abcd abc xabc abcx", "abc", "abcd REDACTED xabc abcx"},
		{"host:1 host:1", "host:1", "REDACTED REDACTED"},
		{"at 10 and 1", "1", "at 10 and REDACTED"},
		{"a:b@c", ":b@", "aREDACTEDc"},
		{"nothing here", "zzz", "nothing here"},
	}
	for _, tt := range tests {
		if got := replaceWord(tt.msg, tt.s); got != tt.want {
			t.Errorf("replaceWord(%q, %q) = %q, want %q", tt.msg, tt.s, got, tt.want)
		}
	}
}

// An address written with a credential in it ("user:password@host:port",
// "token@host:port") is refused, and every message that refuses it masks
// the credential: not only "is not host:port", but an invalid port and an
// address listed twice, for upstream endpoints, Redis addrs and a
// sidecar's services. Before: the last two quoted it whole.
func TestAddressRefusalsQuoteNoCredential(t *testing.T) {
	const routesTail = "routes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n"
	const head = "version: 1\nupstreams:\n  up: {endpoints: [\"127.0.0.1:1\"]}\n" + routesTail
	tests := []struct {
		name    string
		file    string
		sidecar bool
		want    string
	}{
		{"endpoint listed twice", "version: 1\nupstreams:\n  up: {endpoints: [\"u:hunter2@h:1\", \"u:hunter2@h:1\"]}\n" + routesTail, false, "upstreams.up.endpoints[1]: endpoint \"REDACTED@h:1\" is listed twice"},
		{"endpoint with a token and a bad port", "version: 1\nupstreams:\n  up: {endpoints: [\"hunter2@h:99999\"]}\n" + routesTail, false, "upstreams.up.endpoints[0]: \"REDACTED@h:99999\" has an invalid port"},
		{"redis addr listed twice", head + "redis: {addrs: [\"u:hunter2@h:1\", \"u:hunter2@h:1\"]}\n", false, "redis.addrs[1]: \"REDACTED@h:1\" is listed twice"},
		{"redis addr with a token and a bad port", head + "redis: {addrs: [\"hunter2@h:0\"]}\n", false, "redis.addrs[0]: \"REDACTED@h:0\" has an invalid port"},
		{"sidecar service endpoint listed twice", strings.Replace(sidecarBase, `endpoints: ["127.0.0.1:16443"]`, `endpoints: ["u:hunter2@h:1", "u:hunter2@h:1"]`, 1), true, "outbound.services.payments.endpoints[1]: endpoint \"REDACTED@h:1\" is listed twice"},
		{"sidecar forward_to with a bad port", strings.Replace(sidecarBase, `forward_to: "127.0.0.1:7001"`, `forward_to: "hunter2@127.0.0.1:0"`, 1), true, "inbound.forward_to: \"REDACTED@127.0.0.1:0\" has an invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.sidecar {
				_, err = ParseSidecarWith("t.yaml", []byte(tt.file), Options{})
			} else {
				_, err = ParseWith("t.yaml", []byte(tt.file), Options{})
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if msg := err.Error(); strings.Contains(msg, "hunter2") || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q: want %q and no credential", msg, tt.want)
			}
		})
	}
}
