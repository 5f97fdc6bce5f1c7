package routes

import (
	"encoding/json"
	"reflect"
	"strings"
)

//go:generate go run ./gen-schema

// enums are the closed sets of values some keys take, by key path ("*"
// stands for any map key or list index). They end up in the JSON Schema so
// editors can offer them.
var enums = map[string][]string{
	"tls.min_version":                     {"1.2", "1.3"},
	"tls.client_auth":                     {"require", "verify_if_given"},
	"tls.acme.cache":                      {"dir", "redis"},
	"redis.on_error":                      {"allow", "deny"},
	"server.path_normalization":           {PathNormalizationDefault, PathNormalizationStrict},
	"server.http1_engine":                 HTTP1Engines,
	"upstreams.*.balance":                 balancers,
	"upstreams.*.scheme":                  {"http", "https"},
	"upstreams.*.protocol":                Protocols,
	"authenticators.*.jwt.algorithms.*":   JWTAlgorithms,
	"authenticators.*.oidc.on_error":      {"allow", "deny"},
	"authenticators.*.oidc.session.store": {"cookie", "redis"},
	"outbound.services.*.balance":         balancers,
}

// JSONSchema describes the routes file (or, with sidecar set, the sidecar
// file) as a JSON Schema (draft 2020-12), generated from the Go types so it
// cannot drift from what the loader accepts. docs/*.schema.json hold it.
func JSONSchema(sidecar bool) ([]byte, error) {
	var root reflect.Type
	title := "Causeway routes file"
	if sidecar {
		root = reflect.TypeFor[Sidecar]()
		title = "Causeway sidecar file"
	} else {
		root = reflect.TypeFor[File]()
	}
	s := schemaOf(root, "")
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["title"] = title
	s["required"] = []string{"version"}
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

var durationPattern = `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`

func schemaOf(t reflect.Type, path string) map[string]any {
	switch t {
	case durationType:
		return map[string]any{"type": "string", "pattern": durationPattern, "description": "a Go duration such as 250ms, 30s or 1m"}
	case stringListType:
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "array", "items": map[string]any{"type": "string"}}}}
	case rawType:
		return map[string]any{"description": "the plugin's own configuration"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem(), path)
	case reflect.Struct:
		props := map[string]any{}
		for i := range t.NumField() {
			f := t.Field(i)
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if key == "" || key == "-" {
				continue
			}
			props[key] = schemaOf(f.Type, join(path, key))
		}
		return map[string]any{"type": "object", "additionalProperties": false, "properties": props}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem(), join(path, "*"))}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), join(path, "*"))}
	case reflect.String:
		s := map[string]any{"type": "string"}
		if e, ok := enums[path]; ok {
			s["enum"] = e
		}
		return s
	case reflect.Int:
		return map[string]any{"type": "integer"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	}
	return map[string]any{}
}
