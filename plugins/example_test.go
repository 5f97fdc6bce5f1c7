package plugins_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/causewayhq/causeway/auth"
	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/plugins/plugintest"
	"github.com/causewayhq/causeway/routes"
)

// tenantConfig and tenant are the plugin of docs/plugins.md "Writing a
// plugin", compiled and run here so the documentation stays true.
type tenantConfig struct {
	Header string `yaml:"header"`
	Claim  string `yaml:"claim"`
}

type tenant struct{ header, claim string }

func newTenant(_ context.Context, cfg routes.Raw) (plugins.Instance, error) {
	var c tenantConfig
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	if c.Header == "" {
		return nil, cfg.ErrorAt("header", "header is required")
	}
	if c.Claim == "" {
		c.Claim = "tenant"
	}
	return &tenant{header: c.Header, claim: c.Claim}, nil
}

func (t *tenant) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := auth.FromContext(r.Context())
		if p == nil {
			plugins.Error(w, r, http.StatusUnauthorized, "authentication required")
			return
		}
		v, ok := p.Claim(t.claim)
		if !ok {
			plugins.Error(w, r, http.StatusForbidden, "no tenant")
			return
		}
		r = r.Clone(r.Context())
		r.Header.Set(t.header, v)
		next.ServeHTTP(w, r)
	})
}

func Example() {
	plugins.Register("example_tenant_header", newTenant)

	for _, bad := range []string{"claim: org", "header: X-Tenant\nclaims: org"} {
		_, _, err := plugintest.New("example_tenant_header", bad)
		fmt.Println(err)
	}

	inst, set, err := plugintest.New("example_tenant_header", "header: X-Tenant\nclaim: org")
	if err != nil {
		panic(err)
	}
	defer set.Close()
	h := inst.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("upstream sees X-Tenant:", r.Header.Get("X-Tenant"))
	}))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	fmt.Print(rec.Code, " ", rec.Body.String())

	p := &auth.Principal{Authenticator: "users", Subject: "alice", Claims: map[string]any{"org": "acme"}}
	h.ServeHTTP(httptest.NewRecorder(), r.WithContext(auth.NewContext(r.Context(), p)))
	// Output:
	// plugintest.yaml:10:7: plugins.p.config.header: header is required
	// plugintest.yaml:11:7: plugins.p.config.claims: unknown key (did you mean "claim"?)
	// 401 {"error":"authentication required","status":401,"request_id":""}
	// upstream sees X-Tenant: acme
}
