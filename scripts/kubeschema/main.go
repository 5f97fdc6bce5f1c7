// Command kubeschema turns the Kubernetes OpenAPI v2 document (the
// api/openapi-spec/swagger.json of the k8s.io/kubernetes module) into one
// standalone, strict JSON Schema per kind, in the file layout kubeconform
// reads with -schema-location DIR/{{.ResourceKind}}{{.KindSuffix}}.json.
//
// kubeconform normally downloads such schemas; the test machines reach no
// host but the module proxy, so `make deps` builds them from the module
// instead. Strict means what kubeconform's published "-strict" schemas
// mean: an object that lists its properties admits no others, so a
// misspelt or misplaced field fails validation instead of being ignored.
//
// With -crds instead of -spec it reads CustomResourceDefinitions (the
// Gateway API's, from the sigs.k8s.io/gateway-api module) and writes one
// schema per served version of each, from its openAPIV3Schema, in the same
// layout and equally strict. The CRDs' CEL rules are not JSON Schema: only
// an API server checks them (test/kubernetes applies the examples to one).
//
//	go run ./scripts/kubeschema -spec swagger.json -out DIR
//	go run ./scripts/kubeschema -crds CRD_DIR -out DIR
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	spec := flag.String("spec", "", "path of the Kubernetes swagger.json")
	crds := flag.String("crds", "", "directory of CustomResourceDefinition YAML files (instead of -spec)")
	out := flag.String("out", "", "directory to write the schemas into")
	flag.Parse()
	if (*spec == "") == (*crds == "") || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: kubeschema -spec swagger.json -out DIR | kubeschema -crds DIR -out DIR")
		os.Exit(2)
	}
	var n int
	var err error
	if *crds != "" {
		n, err = runCRDs(*crds, *out)
	} else {
		n, err = run(*spec, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeschema:", err)
		os.Exit(1)
	}
	fmt.Printf("kubeschema: %d schemas in %s\n", n, *out)
}

type gvk struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

func run(specPath, outDir string) (int, error) {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return 0, fmt.Errorf("%s: %w", specPath, err)
	}
	if len(doc.Definitions) == 0 {
		return 0, fmt.Errorf("%s: no definitions", specPath)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return 0, err
	}
	r := resolver{defs: doc.Definitions}
	n := 0
	for name, def := range doc.Definitions {
		kinds, _ := def["x-kubernetes-group-version-kind"].([]any)
		for _, k := range kinds {
			b, _ := json.Marshal(k)
			var g gvk
			if err := json.Unmarshal(b, &g); err != nil || g.Kind == "" || g.Version == "" {
				continue
			}
			// Lists, and the options kinds shared by every group, have no
			// manifests worth validating.
			if strings.HasSuffix(g.Kind, "List") || strings.HasSuffix(g.Kind, "Options") || g.Kind == "WatchEvent" || g.Kind == "Status" {
				continue
			}
			schema := r.expand(name, map[string]bool{})
			schema["$schema"] = "http://json-schema.org/draft-07/schema#"
			setEnum(schema, "kind", g.Kind)
			apiVersion := g.Version
			if g.Group != "" {
				apiVersion = g.Group + "/" + g.Version
			}
			setEnum(schema, "apiVersion", apiVersion)
			b, err := json.MarshalIndent(schema, "", " ")
			if err != nil {
				return n, fmt.Errorf("%s: %w", name, err)
			}
			if err := os.WriteFile(filepath.Join(outDir, fileName(g)), b, 0o644); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// fileName follows kubeconform's {{.ResourceKind}}{{.KindSuffix}}: the kind
// in lower case, then the first label of the group (none for the core
// group) and the version.
func fileName(g gvk) string {
	suffix := "-" + strings.ToLower(g.Version)
	if g.Group != "" {
		suffix = "-" + strings.ToLower(strings.Split(g.Group, ".")[0]) + suffix
	}
	return strings.ToLower(g.Kind) + suffix + ".json"
}

func setEnum(schema map[string]any, field, value string) {
	props, _ := schema["properties"].(map[string]any)
	if props == nil {
		return
	}
	if p, ok := props[field].(map[string]any); ok {
		p["enum"] = []any{value}
	}
}

type resolver struct {
	defs map[string]map[string]any
}

// special are types whose wire form the OpenAPI document does not state
// the way a validator needs: they accept a number or a string.
var special = map[string]map[string]any{
	"io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}},
	"io.k8s.apimachinery.pkg.api.resource.Quantity":   {"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}},
}

// expand returns the definition with every $ref inlined. A type met again
// inside itself (JSONSchemaProps, the schema of a CRD) becomes an
// unconstrained {} at that depth: such recursion only appears in objects
// that describe schemas, never in the workloads validated here.
func (r resolver) expand(name string, seen map[string]bool) map[string]any {
	if s, ok := special[name]; ok {
		return clone(s).(map[string]any)
	}
	def, ok := r.defs[name]
	if !ok || seen[name] {
		return map[string]any{}
	}
	seen[name] = true
	defer delete(seen, name)
	return r.walk(clone(def), seen).(map[string]any)
}

func (r resolver) walk(v any, seen map[string]bool) any {
	switch t := v.(type) {
	case map[string]any:
		if ref, ok := t["$ref"].(string); ok {
			return r.expand(strings.TrimPrefix(ref, "#/definitions/"), seen)
		}
		for k, child := range t {
			if k == "x-kubernetes-group-version-kind" {
				continue
			}
			t[k] = r.walk(child, seen)
		}
		if f, _ := t["format"].(string); f == "int-or-string" {
			delete(t, "type")
			delete(t, "format")
			t["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		if _, has := t["properties"]; has {
			if _, set := t["additionalProperties"]; !set {
				t["additionalProperties"] = false
			}
		}
		return t
	case []any:
		for i := range t {
			t[i] = r.walk(t[i], seen)
		}
		return t
	}
	return v
}

func clone(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, c := range t {
			m[k] = clone(c)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, c := range t {
			s[i] = clone(c)
		}
		return s
	}
	return v
}
