package routes

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the loader: it must never panic, and
// every failure must be a located Errors list.
func FuzzParse(f *testing.F) {
	f.Add([]byte(base))
	if data, err := os.ReadFile("../examples/causeway.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("version: 1\nroutes: [{name: a, match: {path: \"/{x}\"}, split: [{upstream: u, weight: 1}]}]\nupstreams: {u: {endpoints: [\"a:1\"]}}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("version: 1\nplugins: {p: {use: x, config: {a: [1, {b: c}]}}}\n"))
	// Decode errors beside validation errors: both are reported.
	f.Add([]byte("version: one\nupstrems: {a: {endpoints: x}}\nupstreams: {b: {timeout: banana, endpoints: [\"a:1\"]}}\nroutes: [{name: a, upstream: c, match: {methods: GET}}]\n"))
	f.Add([]byte("version: 1\nmesh: 5\ntls: {certificates: {cert_file: a}}\nroutes: [x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.yaml", data)
		if err != nil {
			checkErrorList(t, err)
			return
		}
		if file.Version != 1 || len(file.Routes) == 0 {
			t.Fatalf("invalid file accepted: %+v", file)
		}
	})
}

// checkErrorList wants a non-empty Errors of located errors, sorted by
// position.
func checkErrorList(t *testing.T, err error) {
	t.Helper()
	var list Errors
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("error is not a located list: %T %v", err, err)
	}
	for i, e := range list {
		if e.Pos.Line < 1 || e.Pos.Col < 1 {
			t.Fatalf("error without a position: %v", e)
		}
		if i > 0 && (e.Pos.Line < list[i-1].Pos.Line || e.Pos.Line == list[i-1].Pos.Line && e.Pos.Col < list[i-1].Pos.Col) {
			t.Fatalf("errors out of order:\n%v", list)
		}
	}
}
