package routes

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// The committed schemas must be what the types generate: run
// `go generate ./routes` after changing a type.
func TestSchemaUpToDate(t *testing.T) {
	for file, sidecar := range map[string]bool{"../docs/routes.schema.json": false, "../docs/sidecar.schema.json": true} {
		want, err := JSONSchema(sidecar)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go generate ./routes", file)
		}
	}
}

func TestSchemaShape(t *testing.T) {
	data, err := JSONSchema(false)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties map[string]struct {
			AdditionalProperties json.RawMessage `json:"additionalProperties"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"version", "listen", "tls", "redis", "mesh", "authenticators", "rate_limits", "plugins", "upstreams", "routes"} {
		if _, ok := s.Properties[key]; !ok {
			t.Errorf("schema lacks %q", key)
		}
	}
	if !bytes.Contains(data, []byte(`"round_robin"`)) || !bytes.Contains(data, []byte(`"additionalProperties": false`)) {
		t.Error("schema lacks enums or strictness")
	}
}
