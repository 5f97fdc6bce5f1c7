package routes

import (
	"strings"
	"testing"
	"time"
)

// authFile is base with an authenticators section made of body.
func authFile(body string) string { return base + "authenticators:\n" + body }

// oidcAuth is an authenticator "sso" whose oidc settings are a flow mapping
// on line 11.
func oidcAuth(settings string) string {
	return authFile("  sso:\n    oidc: {" + settings + "}\n")
}

// oidcRoutes is a file whose one route (match given, then auth: sso) signs
// in through sso, with logout_path /out.
func oidcRoutes(match string) string {
	return `version: 1
authenticators:
  sso:
    oidc: {issuer: https://id.example.com/, client_id: web, logout_path: /out, session: {keys_env: K}}
upstreams:
  orders:
    endpoints: ["127.0.0.1:7001"]
routes:
  - name: app
` + match + "    auth: sso\n    upstream: orders\n"
}

func jwtAuth(lines string) string {
	return authFile("  users:\n    jwt:\n" + lines)
}

func TestAuthValidation(t *testing.T) {
	pub := "      public_key_files: [k.pem]\n"
	tests := []struct {
		name string
		file string
		want string // "" accepts the file; otherwise a substring of the errors
	}{
		{"jwks", jwtAuth("      jwks_url: https://id.example.com/jwks\n      algorithms: [RS256, ES256, EdDSA]\n"), ""},
		{"public key files", jwtAuth(pub + "      algorithms: [PS256]\n"), ""},
		{"hmac env", jwtAuth("      hmac_secret_env: S\n      algorithms: [HS256, HS512]\n"), ""},
		{"api key", authFile("  p:\n    api_key: {keys_file: keys.txt}\n"), ""},
		{"neither", authFile("  p: {}\n"), "t.yaml:10:6: authenticators.p: needs one of jwt, api_key, basic, ext_authz or oidc"},
		{"both", authFile("  p:\n    jwt: {jwks_url: \"https://x/j\", algorithms: [RS256]}\n    api_key: {keys_file: k}\n"), "authenticators.p: jwt, api_key, basic, ext_authz and oidc are exclusive"},
		{"bad name", authFile("  \"no spaces\":\n    api_key: {keys_file: k}\n"), `authenticator name "no spaces"`},
		{"no key source", jwtAuth("      algorithms: [RS256]\n"), "needs a key source"},
		{"two secret sources", jwtAuth("      hmac_secret_env: S\n      hmac_secret_file: s\n      algorithms: [HS256]\n"), "hmac_secret_env and hmac_secret_file are exclusive"},
		{"jwks not a url", jwtAuth("      jwks_url: id.example.com/jwks\n      algorithms: [RS256]\n"), `authenticators.users.jwt.jwks_url: "id.example.com/jwks" is not an http(s) URL`},
		{"no algorithms", jwtAuth(pub), "t.yaml:12:7: authenticators.users.jwt.algorithms: list the allowed algorithms"},
		{"alg none", jwtAuth(pub + "      algorithms: [none]\n"), `t.yaml:13:20: authenticators.users.jwt.algorithms[0]: unknown algorithm "none"`},
		{"lowercase alg", jwtAuth(pub + "      algorithms: [rs256]\n"), `unknown algorithm "rs256"`},
		{"HS with public keys", jwtAuth(pub + "      algorithms: [RS256, HS256]\n"), "algorithms[1]: HS256 needs hmac_secret_env or hmac_secret_file"},
		{"RS with a secret", jwtAuth("      hmac_secret_env: S\n      algorithms: [RS256]\n"), "algorithms[0]: RS256 needs jwks_url or public_key_files"},
		{"bad forward header", jwtAuth(pub + "      algorithms: [RS256]\n      forward_claims: {sub: \"X User\"}\n"), `forward_claims.sub: "X User" is not a header name`},
		{"forward into authorization", jwtAuth(pub + "      algorithms: [RS256]\n      forward_claims: {sub: authorization}\n"), `"Authorization" cannot carry a claim`},
		{"two claims one header", jwtAuth(pub + "      algorithms: [RS256]\n      forward_claims: {sub: X-User, email: x-user}\n"), `header "X-User" already carries claim "email"`},
		{"token from two places", jwtAuth(pub + "      algorithms: [RS256]\n      from: {header: X-T, cookie: t}\n"), "from: set exactly one of header, cookie or query"},
		{"token from a bad header", jwtAuth(pub + "      algorithms: [RS256]\n      from: {header: \"a b\"}\n"), `from.header: "a b" is not a header name`},
		{"token from a cookie", jwtAuth(pub + "      algorithms: [RS256]\n      from: {cookie: session}\n"), ""},
		{"negative leeway", jwtAuth(pub + "      algorithms: [RS256]\n      leeway: -1s\n"), `leeway: duration "-1s" must not be negative`},
		{"max token bytes too large", jwtAuth(pub + "      algorithms: [RS256]\n      max_token_bytes: 2000000\n"), "max_token_bytes: must be between 1 and 1048576"},
		{"negative max token bytes", jwtAuth(pub + "      algorithms: [RS256]\n      max_token_bytes: -1\n"), "max_token_bytes: must be between"},
		{"negative token cache", jwtAuth(pub + "      algorithms: [RS256]\n      token_cache: -1\n"), "token_cache: must not be negative"},
		{"token cache off", jwtAuth(pub + "      algorithms: [RS256]\n      token_cache: 0\n"), ""},
		{"refresh bounds without jwks", jwtAuth(pub + "      algorithms: [RS256]\n      jwks_refresh: {min: 1m}\n"), "jwks_refresh: only applies to jwks_url"},
		{"refresh min above max", jwtAuth("      jwks_url: https://x/j\n      algorithms: [RS256]\n      jwks_refresh: {min: 2h, max: 1h}\n"), "jwks_refresh.min: min (2h0m0s) exceeds max (1h0m0s)"},
		{"refresh min too small", jwtAuth("      jwks_url: https://x/j\n      algorithms: [RS256]\n      jwks_refresh: {min: 10ms}\n"), "jwks_refresh.min: must be at least 1s"},
		{"refresh max too small", jwtAuth("      jwks_url: https://x/j\n      algorithms: [RS256]\n      jwks_refresh: {max: 500ms}\n"), "jwks_refresh.max: must be at least 1s (found 500ms)"},
		{"refresh negative", jwtAuth("      jwks_url: https://x/j\n      algorithms: [RS256]\n      jwks_refresh: {max: -1m}\n"), `jwks_refresh.max: duration "-1m" must not be negative`},
		{"api key without file", authFile("  p:\n    api_key: {header: X-K}\n"), "authenticators.p.api_key.keys_file: is required"},
		{"api key header and query", authFile("  p:\n    api_key: {keys_file: k, header: X-K, query: k}\n"), "api_key.query: header and query are exclusive"},
		{"api key bad forward name", authFile("  p:\n    api_key: {keys_file: k, forward_name: \"a:b\"}\n"), `forward_name: "a:b" is not a header name`},
		{"api key name into Authorization", authFile("  p:\n    api_key: {keys_file: k, forward_name: authorization}\n"), `forward_name: "Authorization" cannot carry the key's name`},
		{"api key name into a header the edge sets", authFile("  p:\n    api_key: {keys_file: k, forward_name: X-Forwarded-User}\n"), `forward_name: "X-Forwarded-User" cannot carry the key's name`},
		{"basic", authFile("  staff:\n    basic: {htpasswd_file: staff.htpasswd, forward_user: X-User, cache_ttl: 0s, failure_limit: {limit: 3, per: 5m}}\n"), ""},
		{"basic without file", authFile("  staff:\n    basic: {realm: s}\n"), "authenticators.staff.basic.htpasswd_file: is required"},
		{"basic and api key", authFile("  p:\n    basic: {htpasswd_file: h}\n    api_key: {keys_file: k}\n"), "authenticators.p: jwt, api_key, basic, ext_authz and oidc are exclusive"},
		{"basic forward into cookie", authFile("  staff:\n    basic: {htpasswd_file: h, forward_user: cookie}\n"), `basic.forward_user: "Cookie" cannot carry the user name`},
		{"basic bad forward header", authFile("  staff:\n    basic: {htpasswd_file: h, forward_user: \"a b\"}\n"), `basic.forward_user: "a b" is not a header name`},
		{"basic cache too long", authFile("  staff:\n    basic: {htpasswd_file: h, cache_ttl: 1h}\n"), "basic.cache_ttl: must be between 0s (no cache) and 5m0s (found 1h0m0s)"},
		{"basic negative failure limit", authFile("  staff:\n    basic: {htpasswd_file: h, failure_limit: {limit: -1, burst: -2}}\n"), "basic.failure_limit.burst: must be positive (found -2)"},
		{"oidc", oidcAuth("issuer: https://id.example.com/, client_id: web, client_secret_env: OIDC_SECRET, scopes: [openid, email], logout_path: /oauth2/logout, forward_claims: {sub: X-User-Id}, forward_access_token: true, session: {keys_env: SESSION_KEYS, idle_timeout: 30m, absolute_timeout: 8h}"), ""},
		{"oidc loopback http", oidcAuth("issuer: \"http://127.0.0.1:9998/\", client_id: web, session: {keys_env: K}"), ""},
		{"oidc without issuer", oidcAuth("client_id: web, session: {keys_env: K}"), "t.yaml:11:11: authenticators.sso.oidc.issuer: is required"},
		{"oidc plain http off loopback", oidcAuth("issuer: \"http://id.example.com/\", client_id: web, session: {keys_env: K}"), "t.yaml:11:20: authenticators.sso.oidc.issuer: plain http to id.example.com"},
		{"oidc issuer with query", oidcAuth("issuer: \"https://id.example.com/?x=1\", client_id: web, session: {keys_env: K}"), "oidc.issuer: \"https://id.example.com/?x=1\" is not an http(s) URL"},
		{"oidc without client", oidcAuth("issuer: https://id.example.com/, session: {keys_env: K}"), "authenticators.sso.oidc.client_id: is required"},
		{"oidc without keys", oidcAuth("issuer: https://id.example.com/, client_id: web"), "authenticators.sso.oidc.session.keys_env: is required"},
		{"oidc bad secret env", oidcAuth("issuer: https://id.example.com/, client_id: web, client_secret_env: \"A-B\", session: {keys_env: K}"), `oidc.client_secret_env: "A-B" is not an environment variable name`},
		{"oidc relative redirect", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_path: callback, session: {keys_env: K}"), `oidc.redirect_path: "callback" is not an absolute path`},
		{"oidc redirect_url", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_url: https://app.example.com/sso/cb, session: {keys_env: K}"), ""},
		{"oidc redirect_url with its path as redirect_path", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_url: https://app.example.com/cb, redirect_path: /cb, session: {keys_env: K}"), ""},
		{"oidc redirect_url loopback http", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_url: \"http://localhost:8080/cb\", session: {keys_env: K}"), ""},
		{"oidc redirect_url plain http", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_url: \"http://app.example.com/cb\", session: {keys_env: K}"), "oidc.redirect_url: plain http to app.example.com sends the authorization code in the clear"},
		{"oidc redirect_url without path", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_url: https://app.example.com, session: {keys_env: K}"), "needs a path"},
		{"oidc redirect_url with query", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_url: \"https://app.example.com/cb?next=/\", session: {keys_env: K}"), "is not an http(s) URL without query"},
		{"oidc redirect_url with credentials", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_url: \"https://u:pw@app.example.com/cb\", session: {keys_env: K}"), "is not an http(s) URL without query"},
		{"oidc redirect_url relative", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_url: /cb, session: {keys_env: K}"), "is not an http(s) URL"},
		{"oidc redirect_url and another redirect_path", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_url: https://app.example.com/cb, redirect_path: /other, session: {keys_env: K}"), `oidc.redirect_path: "/other" differs from redirect_url's path "/cb"`},
		{"oidc private_key_file", oidcAuth("issuer: https://id.example.com/, client_id: web, private_key_file: k.pem, private_key_id: k1, session: {keys_env: K}"), ""},
		{"oidc private_key_file and a secret", oidcAuth("issuer: https://id.example.com/, client_id: web, client_secret_env: S, private_key_file: k.pem, session: {keys_env: K}"), "t.yaml:11:101: authenticators.sso.oidc.private_key_file: and client_secret_env are two ways to authenticate the client: set one"},
		{"oidc private_key_id alone", oidcAuth("issuer: https://id.example.com/, client_id: web, private_key_id: k1, session: {keys_env: K}"), "oidc.private_key_id: needs private_key_file"},
		{"oidc private_key_id with a quote", oidcAuth("issuer: https://id.example.com/, client_id: web, private_key_file: k.pem, private_key_id: 'a\"b', session: {keys_env: K}"), `oidc.private_key_id: "a\"b" is not a key id`},
		{"oidc logout is callback", oidcAuth("issuer: https://id.example.com/, client_id: web, redirect_path: /cb, logout_path: /cb, session: {keys_env: K}"), "oidc.logout_path: is the same as redirect_path"},
		{"oidc bad scope", oidcAuth("issuer: https://id.example.com/, client_id: web, scopes: [\"a b\"], session: {keys_env: K}"), `t.yaml:11:70: authenticators.sso.oidc.scopes[0]: "a b" is not a scope`},
		{"oidc bad on_error", oidcAuth("issuer: https://id.example.com/, client_id: web, on_error: maybe, session: {keys_env: K}"), `oidc.on_error: must be allow or deny (found "maybe")`},
		{"oidc bad status", oidcAuth("issuer: https://id.example.com/, client_id: web, status_on_error: 302, session: {keys_env: K}"), "oidc.status_on_error: must be a 4xx or 5xx status"},
		{"oidc forward into cookie", oidcAuth("issuer: https://id.example.com/, client_id: web, forward_claims: {sub: Cookie}, session: {keys_env: K}"), `oidc.forward_claims.sub: "Cookie" cannot carry a claim`},
		{"oidc cookie with a dot", oidcAuth("issuer: https://id.example.com/, client_id: web, session: {keys_env: K, cookie: a.b}"), `oidc.session.cookie: "a.b" is not a cookie name without dots`},
		{"oidc idle above absolute", oidcAuth("issuer: https://id.example.com/, client_id: web, session: {keys_env: K, idle_timeout: 9h, absolute_timeout: 8h}"), "oidc.session.idle_timeout: idle_timeout (9h0m0s) exceeds absolute_timeout (8h0m0s)"},
		{"oidc redis store", base + "redis: {url: \"redis://127.0.0.1:6379/0\"}\nauthenticators:\n  sso:\n    oidc: {issuer: https://id.example.com/, client_id: web, session: {keys_env: K, store: redis}}\n", ""},
		{"oidc cookie store", oidcAuth("issuer: https://id.example.com/, client_id: web, session: {keys_env: K, store: cookie}"), ""},
		{"oidc redis store without a redis section", oidcAuth("issuer: https://id.example.com/, client_id: web, session: {keys_env: K, store: redis}"), "t.yaml:11:91: authenticators.sso.oidc.session.store: store: redis keeps the sessions in the redis section's Redis: add a redis section"},
		{"oidc unknown store", oidcAuth("issuer: https://id.example.com/, client_id: web, session: {keys_env: K, store: memcached}"), `t.yaml:11:91: authenticators.sso.oidc.session.store: must be cookie or redis (found "memcached")`},
		{"oidc bad store with other problems at once", oidcAuth("issuer: https://id.example.com/, client_id: web, status_on_error: 302, session: {keys_env: K, store: file}"), "status_on_error: must be a 4xx or 5xx status"},
		{"oidc unknown key", oidcAuth("issuer: https://id.example.com/, client_id: web, client_secret: s, session: {keys_env: K}"), "client_secret"},
		{"oidc and jwt", authFile("  sso:\n    oidc: {issuer: https://id.example.com/, client_id: web, session: {keys_env: K}}\n    jwt: {jwks_url: \"https://x/j\", algorithms: [RS256]}\n"), "are exclusive"},
		{"oidc two authenticators one cookie", authFile("  a:\n    oidc: {issuer: https://id.example.com/, client_id: web, session: {keys_env: K, cookie: s}}\n  b:\n    oidc: {issuer: https://id.example.com/, client_id: web, session: {keys_env: K, cookie: s}}\n"), `authenticators.b.oidc.session.cookie: cookie "s" is already the session of authenticator "a"`},
		{"ext_authz grpc", authFile("  opa:\n    ext_authz: {grpc_address: \"127.0.0.1:9191\", timeout: 250ms, on_error: allow, body: {max_bytes: 4096}, cache: {ttl: 5s, key: [header:Authorization, method, path]}}\n"), ""},
		{"ext_authz http", authFile("  fa:\n    ext_authz: {http_url: \"https://auth.example/verify\", upstream_headers: [X-Auth-User], claims_from_headers: {X-Auth-User: sub}}\n"), ""},
		{"ext_authz opa", authFile("  opa:\n    ext_authz: {opa_url: \"http://localhost:8181/v1/data/envoy/authz/result\", forward_claims: {sub: X-User}}\n"), ""},
		{"ext_authz no server", authFile("  opa:\n    ext_authz: {timeout: 1s}\n"), "authenticators.opa.ext_authz: set exactly one of grpc_address, http_url or opa_url"},
		{"ext_authz two servers", authFile("  opa:\n    ext_authz: {grpc_address: \"127.0.0.1:1\", opa_url: \"http://127.0.0.1:2/v1/data/x\"}\n"), "set exactly one of"},
		{"ext_authz plaintext grpc off loopback", authFile("  opa:\n    ext_authz: {grpc_address: \"authz.internal:9191\"}\n"), "ext_authz.grpc_address: plaintext gRPC to authz.internal"},
		{"ext_authz plaintext http off loopback", authFile("  opa:\n    ext_authz: {http_url: \"http://authz.internal/verify\"}\n"), "ext_authz.http_url: plain http to authz.internal"},
		{"ext_authz insecure allowed", authFile("  opa:\n    ext_authz: {grpc_address: \"authz.internal:9191\", allow_insecure: true}\n"), ""},
		{"ext_authz grpc tls", authFile("  opa:\n    ext_authz: {grpc_address: \"authz.internal:9191\", grpc_tls: true}\n"), ""},
		{"ext_authz bad on_error", authFile("  opa:\n    ext_authz: {grpc_address: \"127.0.0.1:1\", on_error: maybe}\n"), `ext_authz.on_error: must be allow or deny (found "maybe")`},
		{"ext_authz bad status", authFile("  opa:\n    ext_authz: {grpc_address: \"127.0.0.1:1\", status_on_error: 200}\n"), "ext_authz.status_on_error: must be a 4xx or 5xx status"},
		{"ext_authz body too big", authFile("  opa:\n    ext_authz: {grpc_address: \"127.0.0.1:1\", body: {max_bytes: 0}}\n"), "ext_authz.body.max_bytes: must be between 1 and 1048576"},
		{"ext_authz upstream header forged", authFile("  fa:\n    ext_authz: {http_url: \"http://127.0.0.1/v\", upstream_headers: [X-Forwarded-For, Host]}\n"), `ext_authz.upstream_headers[0]: "X-Forwarded-For" is set by the edge itself`},
		{"ext_authz upstream header owned by the edge", authFile("  fa:\n    ext_authz: {http_url: \"http://127.0.0.1/v\", upstream_headers: [X-Auth-User, X-Causeway-Peer-Id]}\n"), `ext_authz.upstream_headers[1]: "X-Causeway-Peer-Id" is set by the edge itself`},
		{"ext_authz upstream header a client address", authFile("  fa:\n    ext_authz: {http_url: \"http://127.0.0.1/v\", upstream_headers: [True-Client-Ip]}\n"), `ext_authz.upstream_headers[0]: "True-Client-Ip" is set by the edge itself`},
		{"ext_authz upstream header underscored", authFile("  fa:\n    ext_authz: {http_url: \"http://127.0.0.1/v\", upstream_headers: [X_Forwarded_For]}\n"), `ext_authz.upstream_headers[0]: "X_forwarded_for" is set by the edge itself`},
		{"ext_authz upstream header url override", authFile("  fa:\n    ext_authz: {http_url: \"http://127.0.0.1/v\", upstream_headers: [X-Original-Url]}\n"), `"X-Original-Url" is set by the edge itself`},
		{"ext_authz upstream headers on grpc", authFile("  opa:\n    ext_authz: {grpc_address: \"127.0.0.1:1\", upstream_headers: [X-User]}\n"), ""},
		{"ext_authz cache without key", authFile("  opa:\n    ext_authz: {grpc_address: \"127.0.0.1:1\", cache: {ttl: 5s}}\n"), "ext_authz.cache.key: list what identifies a decision"},
		{"ext_authz cache bad key", authFile("  opa:\n    ext_authz: {grpc_address: \"127.0.0.1:1\", cache: {ttl: 5s, key: [cookie:x]}}\n"), `ext_authz.cache.key[0]: "cookie:x" is not one of`},
		{"ext_authz cache ttl too long", authFile("  opa:\n    ext_authz: {grpc_address: \"127.0.0.1:1\", cache: {ttl: 1h, key: [method]}}\n"), "ext_authz.cache.ttl: must be between 1ms and 5m0s"},
		{"ext_authz every problem at once", authFile("  opa:\n    ext_authz: {grpc_address: \"authz.internal:9191\", on_error: maybe, status_on_error: 99}\n"), "status_on_error"},
		{"oidc callback no route of its own reaches", oidcRoutes("    match: {path_prefix: /app}\n"), `t.yaml:10:12: routes[0].match: signs in through "sso", but no route using it matches its redirect_path /oauth2/callback`},
		{"oidc logout no route of its own reaches", oidcRoutes("    match: {path_prefix: /oauth2/callback}\n"), "matches its logout_path /out"},
		{"oidc callback reached by a catch-all route", oidcRoutes("    match: {path_prefix: /}\n"), ""},
		{"oidc callback reached by a route of its own", oidcRoutes("    match: {path_prefix: /app}\n") + "  - name: login\n    match: {path_prefix: /oauth2/}\n    auth: sso\n    upstream: orders\n  - name: logout\n    match: {path: /out}\n    auth: sso\n    upstream: orders\n", ""},
		{"oidc callback route without GET", oidcRoutes("    match: {path_prefix: /, methods: [POST]}\n"), "matches its redirect_path"},
		{"route with undefined auth", base + "    auth: nope\n", `routes[0].auth[0]: undefined authenticator "nope"`},
		{"claims without auth", base + "    require_claims: {scope: x}\n", "routes[0].require_claims: needs auth"},
		{"unknown key", jwtAuth(pub + "      algorithms: [RS256]\n      audience: api\n"), `t.yaml:14:7: authenticators.users.jwt.audience: unknown key (did you mean "audiences"?)`},
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

func TestAuthDefaults(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		check func(t *testing.T, f *File)
	}{
		{"jwt", jwtAuth("      jwks_url: https://x/j\n      algorithms: [RS256]\n"), func(t *testing.T, f *File) {
			j := f.Authenticators["users"].JWT
			if j.Realm != "users" || j.MaxTokenBytes != DefaultMaxTokenBytes || j.TokenCache == nil || *j.TokenCache != DefaultTokenCache {
				t.Fatalf("jwt defaults %+v", j)
			}
			if b := j.JWKSRefresh; b == nil || b.Min.D() != DefaultJWKSRefreshMin || b.Max.D() != DefaultJWKSRefreshMax {
				t.Fatalf("jwks_refresh %+v", b)
			}
		}},
		{"explicit values kept", jwtAuth("      jwks_url: https://x/j\n      algorithms: [RS256]\n      realm: api\n      token_cache: 0\n      max_token_bytes: 4096\n      jwks_refresh: {min: 5s, max: 10m}\n"), func(t *testing.T, f *File) {
			j := f.Authenticators["users"].JWT
			if j.Realm != "api" || *j.TokenCache != 0 || j.MaxTokenBytes != 4096 || j.JWKSRefresh.Min.D() != 5*time.Second || j.JWKSRefresh.Max.D() != 10*time.Minute {
				t.Fatalf("explicit values changed: %+v %+v", j, j.JWKSRefresh)
			}
		}},
		{"max below the default min pulls min down", jwtAuth("      jwks_url: https://x/j\n      algorithms: [RS256]\n      jwks_refresh: {max: 10s}\n"), func(t *testing.T, f *File) {
			if b := f.Authenticators["users"].JWT.JWKSRefresh; b.Min.D() != 10*time.Second || b.Max.D() != 10*time.Second {
				t.Fatalf("jwks_refresh %+v", b)
			}
		}},
		{"no refresh bounds without jwks", jwtAuth("      public_key_files: [k.pem]\n      algorithms: [RS256]\n"), func(t *testing.T, f *File) {
			if f.Authenticators["users"].JWT.JWKSRefresh != nil {
				t.Fatal("jwks_refresh set for a static-key authenticator")
			}
		}},
		{"api key header", authFile("  p:\n    api_key: {keys_file: k}\n"), func(t *testing.T, f *File) {
			if k := f.Authenticators["p"].APIKey; k.Header != DefaultAPIKeyHeader {
				t.Fatalf("header %q", k.Header)
			}
		}},
		{"oidc", oidcAuth("issuer: https://id.example.com/, client_id: web, session: {keys_env: K}"), func(t *testing.T, f *File) {
			o := f.Authenticators["sso"].OIDC
			if o.Realm != "sso" || o.RedirectPath != DefaultOIDCRedirectPath || len(o.Scopes) != 3 || o.RefreshBefore.D() != DefaultOIDCRefreshBefore ||
				o.OnError != "deny" || o.StatusOnError != DefaultOIDCStatusOnError {
				t.Fatalf("oidc defaults %+v", o)
			}
			if s := o.Session; s.Cookie != "__Host-causeway-sso" || s.IdleTimeout.D() != DefaultOIDCIdleTimeout || s.AbsoluteTimeout.D() != DefaultOIDCAbsoluteTimeout {
				t.Fatalf("session defaults %+v", s)
			}
		}},
		{"basic", authFile("  staff:\n    basic: {htpasswd_file: h}\n"), func(t *testing.T, f *File) {
			b := f.Authenticators["staff"].Basic
			if b.Realm != "staff" || b.CacheTTL == nil || b.CacheTTL.D() != DefaultBasicCacheTTL {
				t.Fatalf("basic defaults %+v", b)
			}
			if fl := b.FailureLimit; fl.Limit != DefaultBasicFailureLimit || fl.Per.D() != DefaultBasicFailurePer || fl.Burst != DefaultBasicFailureLimit {
				t.Fatalf("failure_limit defaults %+v", fl)
			}
		}},
		{"basic explicit values kept", authFile("  staff:\n    basic: {htpasswd_file: h, cache_ttl: 0s, failure_limit: {limit: 3, per: 1h, burst: 1}}\n"), func(t *testing.T, f *File) {
			b := f.Authenticators["staff"].Basic
			if b.CacheTTL.D() != 0 || b.FailureLimit.Limit != 3 || b.FailureLimit.Per.D() != time.Hour || b.FailureLimit.Burst != 1 {
				t.Fatalf("explicit values changed: %+v %+v", b, b.FailureLimit)
			}
		}},
		{"api key query keeps no header", authFile("  p:\n    api_key: {keys_file: k, query: key}\n"), func(t *testing.T, f *File) {
			if k := f.Authenticators["p"].APIKey; k.Header != "" || k.Query != "key" {
				t.Fatalf("api key %+v", k)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("t.yaml", []byte(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, f)
		})
	}
}
