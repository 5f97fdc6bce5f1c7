package routes

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// credentialish matches field names that may hold a credential or a URL
// (which may embed one).
var credentialish = regexp.MustCompile(`(?i)(secret|passw|token|key|cred|auth|url|endpoint|^ask$|dsn|cookie|session|signature)`)

// notSecret lists the string fields whose names match credentialish but
// hold no credential, each with the reason. A new field that matches must
// be tagged secret:"url"/"value" or be added here with its reason: that is
// the point of TestSecretFieldsAreTagged.
var notSecret = map[string]string{
	"rate_limits.*.key":                     "a key expression (client_ip, claim:sub), not a credential",
	"redis.key_prefix":                      "a prefix for Redis key names",
	"authenticators.*.api_key.header":       "the name of the header the key is read from",
	"authenticators.*.api_key.query":        "the name of the query parameter the key is read from",
	"authenticators.*.jwt.from.header":      "the name of a header",
	"authenticators.*.jwt.from.cookie":      "the name of a cookie",
	"authenticators.*.jwt.from.query":       "the name of a query parameter",
	"upstreams.*.endpoints":                 "host:port addresses",
	"outbound.services.*.endpoints":         "host:port addresses",
	"upstreams.*.endpoints_file":            "a path",
	"authenticators.*.api_key.forward_name": "the name of a header",
	"tls.client_auth":                       "require | verify_if_given",
	"routes.auth":                           "names of authenticators",
	"inbound.rules.callers.authenticators":  "names of the edge's authenticators",
	"authenticators.*.ext_authz.cache.key":  "what identifies a decision (method, header:NAME), not a credential",
	"authenticators.*.oidc.private_key_id":  "the public id (kid) the provider registered the key under",
	"authenticators.*.oidc.session.cookie":  "the name of the session cookie",
}

func walkFields(t reflect.Type, path string, visit func(path string, f reflect.StructField)) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		if t.Kind() == reflect.Map {
			path += ".*"
		}
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == rawType {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		p := strings.TrimPrefix(path+"."+name, ".")
		visit(p, f)
		walkFields(f.Type, p, visit)
	}
}

func TestSecretFieldsAreTagged(t *testing.T) {
	for _, root := range []reflect.Type{reflect.TypeOf(File{}), reflect.TypeOf(Sidecar{})} {
		walkFields(root, "", func(path string, f reflect.StructField) {
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() != reflect.String {
				return
			}
			name := yamlName(f)
			if !credentialish.MatchString(name) || strings.HasSuffix(name, "_env") || strings.HasSuffix(name, "_file") || strings.HasSuffix(name, "_files") {
				return
			}
			if f.Tag.Get("secret") != "" {
				return
			}
			if _, ok := notSecret[path]; ok {
				return
			}
			t.Errorf("%s.%s (%s): the name suggests a credential or a URL: tag it secret:\"url\" or secret:\"value\", or list it in notSecret with the reason", root.Name(), path, f.Name)
		})
	}
}

func TestViewMasksCredentials(t *testing.T) {
	f, err := Parse("c.yaml", []byte(`version: 1
listen: {http: ":8080"}
redis: {url: "redis://:hunter2-redis@redis:6379/0", on_error: allow}
tls:
  acme:
    email: ops@example.com
    hosts: [a.example.com]
    cache_dir: /tmp/acme
    directory_url: "https://acct:hunter2-acme@acme.example/dir"
tracing: {otlp_endpoint: "https://collector:4318"}
authenticators:
  users:
    jwt:
      issuer: https://id.example.com/
      audiences: [api]
      algorithms: [RS256]
      jwks_url: "https://svc:hunter2-jwks@id.example.com/jwks?token=hunter2-query&tenant=acme"
  partners:
    api_key: {header: X-API-Key, keys_file: keys.txt}
  forward:
    ext_authz: {http_url: "https://edge:hunter2-fa@auth.example/verify?access_token=hunter2-fa-query"}
  policy:
    ext_authz: {opa_url: "https://opa:hunter2-opa@opa.example/v1/data/envoy/authz/result"}
rate_limits:
  per-user: {key: "claim:sub", limit: 10, per: 1s}
plugins:
  hdrs:
    use: headers
    config:
      request:
        set: {Authorization: "Bearer hunter2-bearer", Cookie: "sid=hunter2-cookie", X-Api-Key: "hunter2-apikey", X-Auth-Token: "hunter2-token", X-Plain: "visible-value"}
  nested:
    use: respond
    config:
      list: [{webhook: "https://hooks.example/x?api_key=hunter2-hook"}, {password: "hunter2-pw"}]
      ghtoken: "https://hunter2ghtokenvalue@github.com/org/repo"
      tls: {passphrase: hunter2-phrase, private: hunter2-private}
      db: {dsn: "app:hunter2-dsn@tcp(db:3306)/orders", pwd: hunter2-pwd}
      upstream_headers: {X-Auth: hunter2-xauth, Bearer: hunter2-bearer2}
upstreams:
  u: {endpoints: ["127.0.0.1:1"]}
routes:
  - {name: r, match: {path_prefix: /}, upstream: u, rate_limit: per-user}
  - name: internal
    match: {path_prefix: /internal, headers: {Authorization: "Bearer hunter2-match", X-Tenant: visible-tenant}, query: {access_token: hunter2-query-match}}
    split:
      - {upstream: u, weight: 1, headers: {X-Canary-Key: hunter2-canary}}
`))
	if err != nil {
		// Plugins are not registered in this package; decoding the file
		// itself must still work for the view.
		if f == nil {
			t.Fatal(err)
		}
	}
	v, err := View(f)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(v)
	s := string(out)
	if strings.Contains(s, "hunter2") {
		t.Fatalf("a credential is shown: %s", s)
	}
	for _, want := range []string{"claim:sub", "X-API-Key", "visible-value", "keys.txt", "svc:REDACTED@id.example.com", "tenant=acme", "ops@example.com", "auth.example/verify", "opa:REDACTED@opa.example", "visible-tenant"} {
		if !strings.Contains(s, want) {
			t.Errorf("%q is not shown (over-redacted?): %s", want, s)
		}
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://id.example.com/jwks", "https://id.example.com/jwks"},
		{"redis://:pw@h:6379/0", "redis://:REDACTED@h:6379/0"},
		{"https://user:pw@h/", "https://user:REDACTED@h/"},
		{"https://tok@h/", "https://REDACTED@h/"},
		{"https://h/?access_token=x&a=1", "https://h/?access_token=REDACTED&a=1"},
		{"/login?access_token=x&next=/", "/login?access_token=REDACTED&next=/"},
		{"https://idp/cb#access_token=x&state=s", "https://idp/cb#access_token=REDACTED&state=s"},
		{"https://h/?a=1;token=x", "https://h/?a=1;token=REDACTED"},
		{"#fff", "#fff"},
		{"https://h/?sig=abc", "https://h/?sig=REDACTED"},
		{"not a url", "not a url"},
		{"127.0.0.1:6379", "127.0.0.1:6379"},
		{"http://a b:pw@x/", "(unparseable URL, REDACTED)"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSecretName(t *testing.T) {
	for name, want := range map[string]bool{
		"Authorization": true, "proxy-authorization": true, "Cookie": true, "X-Api-Key": true,
		"X-Auth-Token": true, "client_secret": true, "password": true, "apikey": true, "key": true,
		"hmac_secret_env": false, "keys_file": false, "X-Request-Id": false, "monkey": false, "header": false,
		"keyboard": false, "X-Plain": false,
		// Names outside the usual words, as plugin configs and match
		// headers spell them.
		"passphrase": true, "tls_passphrase": true, "pass": true, "redis_pass": true, "db_pwd": true,
		"bearer": true, "X-Auth": true, "X-Authentication": true, "auth": true, "hmac": true,
		"jwt": true, "salt": true, "private": true, "dsn": true, "database_dsn": true,
		"author": false, "oauth_provider": false, "bypass": false, "passthrough": false, "compass": false,
		"authority": false, "X-Forwarded-Proto": false, "path": false,
	} {
		if got := SecretName(name); got != want {
			t.Errorf("SecretName(%q) = %v, want %v", name, got, want)
		}
	}
}

// An error quoting a value of the file masks the credentials of the URLs
// it quotes, as /config masks the value itself. Before the fix a plugin's
// refusal (rewrite: a rewritten path must start with "/" (found
// "https://u:pw@host/")) put the password into the log, /config's
// last_reload and the Kubernetes policy status.
func TestErrorMasksQuotedCredentials(t *testing.T) {
	for _, tc := range []struct {
		name, msg, want string
	}{
		{"user and password", `must start with "/" (found "https://u:pw4secret@x.example/$1")`, `must start with "/" (found "https://u:REDACTED@x.example/$1")`},
		{"token as user name", `bad target https://tok3n@x.example/a`, `bad target https://REDACTED@x.example/a`},
		{"credential parameter", `cannot fetch "http://h/jwks?a=1&access_token=tok3n;x=2"`, `cannot fetch "http://h/jwks?a=1&access_token=REDACTED;x=2"`},
		{"unparseable URL", `bad escape in 'https://u:pw%zz@h/%zz'`, `bad escape in 'https://u:REDACTED@h/%zz'`},
		{"@ in the path only", `found "https://h/a@b"`, `found "https://h/a@b"`},
		{"two URLs", `a=https://u:p1@h b=redis://:p2@r:6379/0`, `a=https://u:REDACTED@h b=redis://:REDACTED@r:6379/0`},
		{"relative URL", `found "/login?x=1&access_token=tok3n#sig=abc"`, `found "/login?x=1&access_token=REDACTED#sig=REDACTED"`},
		{"question without URL", `is it? yes, a?b=c`, `is it? yes, a?b=c`},
		{"no URL", `user:pw@host is not host:port`, `user:pw@host is not host:port`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RedactText(tc.msg); got != tc.want {
				t.Errorf("RedactText(%q) = %q, want %q", tc.msg, got, tc.want)
			}
			e := &Error{File: "f.yaml", Pos: Pos{Line: 3, Col: 4}, Path: "plugins.r.config", Msg: tc.msg}
			if got, want := e.Error(), "f.yaml:3:4: plugins.r.config: "+tc.want; got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
		})
	}
}
