package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"go.yaml.in/yaml/v3"
)

// crd is the part of a CustomResourceDefinition a schema is made from.
type crd struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Group string `yaml:"group"`
		Names struct {
			Kind string `yaml:"kind"`
		} `yaml:"names"`
		Versions []struct {
			Name   string `yaml:"name"`
			Served bool   `yaml:"served"`
			Schema struct {
				OpenAPIV3Schema map[string]any `yaml:"openAPIV3Schema"`
			} `yaml:"schema"`
		} `yaml:"versions"`
	} `yaml:"spec"`
}

// runCRDs writes a schema for every served version of every
// CustomResourceDefinition in the YAML files of dir. Other kinds in those
// files (the Gateway API ships a ValidatingAdmissionPolicy beside its
// CRDs) are passed over; a directory without a single CRD is an error, so
// a moved module layout cannot leave kubeconform with nothing to check.
func runCRDs(dir, outDir string) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return 0, err
	}
	sort.Strings(files)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return 0, err
	}
	n := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return n, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var c crd
			if err := dec.Decode(&c); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return n, fmt.Errorf("%s: %w", f, err)
			}
			if c.Kind != "CustomResourceDefinition" {
				continue
			}
			for _, v := range c.Spec.Versions {
				if !v.Served || v.Schema.OpenAPIV3Schema == nil {
					continue
				}
				g := gvk{Group: c.Spec.Group, Version: v.Name, Kind: c.Spec.Names.Kind}
				schema := strictCRD(v.Schema.OpenAPIV3Schema).(map[string]any)
				schema["$schema"] = "http://json-schema.org/draft-07/schema#"
				setEnum(schema, "kind", g.Kind)
				setEnum(schema, "apiVersion", g.Group+"/"+g.Version)
				b, err := jsonIndent(schema)
				if err != nil {
					return n, fmt.Errorf("%s %s: %w", f, v.Name, err)
				}
				if err := os.WriteFile(filepath.Join(outDir, fileName(g)), b, 0o644); err != nil {
					return n, err
				}
				n++
			}
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%s: no CustomResourceDefinition with a schema", dir)
	}
	return n, nil
}

// strictCRD makes a structural schema strict the way walk does for the
// built-in kinds: an object that lists its properties admits no others,
// unless it says it keeps unknown fields. Kubernetes' own extensions are
// turned into what a JSON Schema validator understands.
func strictCRD(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, child := range t {
			t[k] = strictCRD(child)
		}
		if b, _ := t["x-kubernetes-int-or-string"].(bool); b {
			delete(t, "type")
			t["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		keep, _ := t["x-kubernetes-preserve-unknown-fields"].(bool)
		if _, has := t["properties"]; has && !keep {
			if _, set := t["additionalProperties"]; !set {
				t["additionalProperties"] = false
			}
		}
		// Nullable fields accept null as well as their type.
		if b, _ := t["nullable"].(bool); b {
			if typ, ok := t["type"].(string); ok {
				t["type"] = []any{typ, "null"}
			}
		}
		return t
	case []any:
		for i := range t {
			t[i] = strictCRD(t[i])
		}
		return t
	}
	return v
}

func jsonIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", " ") }
