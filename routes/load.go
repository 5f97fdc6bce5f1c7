package routes

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds what Load reads: a routes file is hand-written, and a
// runaway generator must not take the edge's memory with it.
const MaxFileSize = 8 << 20

// Load reads, decodes, defaults and validates the routes file at path. On
// failure the error is an Errors listing every problem found. ${VAR}
// references are expanded from the process environment.
func Load(path string) (*File, error) {
	return LoadEnv(path, os.LookupEnv)
}

// LoadEnv is Load with the environment given by env.
func LoadEnv(path string, env LookupEnv) (*File, error) {
	return LoadWith(path, Options{Env: orNoEnv(env)})
}

// LoadWith is Load with options: the environment, and whether the files
// the configuration names are checked too.
func LoadWith(path string, o Options) (*File, error) {
	data, err := ReadFile(path, "routes")
	if err != nil {
		return nil, err
	}
	return ParseWith(path, data, o)
}

// ReadFile reads a configuration file of the given kind ("routes",
// "sidecar") whole, refusing one larger than MaxFileSize. A server reads
// its file once per reload and both hashes and parses those bytes: a
// second read could see a file replaced in between.
func ReadFile(path, kind string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s file: %w", kind, err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s file %s: %w", kind, path, err)
	}
	if len(data) > MaxFileSize {
		return nil, Errors{{File: path, Pos: Pos{1, 1}, Msg: fmt.Sprintf("file is larger than %d MiB", MaxFileSize>>20)}}
	}
	return data, nil
}

// Parse decodes, defaults and validates a routes file held in memory; name is
// used in error messages. ${VAR} references are expanded from the process
// environment.
func Parse(name string, data []byte) (*File, error) {
	return ParseEnv(name, data, os.LookupEnv)
}

// ParseEnv is Parse with the environment given by env (nil: no variable is
// set, so only references with a default expand).
func ParseEnv(name string, data []byte, env LookupEnv) (*File, error) {
	return ParseWith(name, data, Options{Env: orNoEnv(env)})
}

// ParseWith is Parse with options. Every problem is reported in one run:
// decode errors (wrong types, unknown keys), then validation and, with
// o.CheckFiles, unreadable files over whatever did decode, leaving out
// what would only follow from a decode error.
func ParseWith(name string, data []byte, o Options) (*File, error) {
	root, err := parseYAML(name, data)
	if err != nil {
		return nil, err
	}
	d := newDecoder(name)
	d.env = o.env()
	f := &File{}
	d.decode(root, "", reflectValue(f))
	f.Path = name
	f.Positions = d.pos
	f.env = d.envVals
	if d.tooLarge {
		d.errs.sort()
		return nil, d.errs
	}
	f.applyDefaults()
	d.errs = append(d.errs, f.validate(d.doubt)...)
	errs := d.errs
	if o.CheckFiles {
		errs = append(errs, d.doubt.filter(checkFiles(f.Path, f.At, f.files()))...)
	}
	// Validation quotes the values it refuses; one that came from a
	// ${VAR} reference may be a secret kept out of the file on purpose.
	d.envVals.maskErrors(errs)
	d.envVals.maskErrors(f.Warnings)
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	return f, nil
}

// parseYAML parses exactly one YAML document.
func parseYAML(name string, data []byte) (*yaml.Node, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, Errors{{File: name, Pos: Pos{1, 1}, Msg: "file is empty"}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		return nil, Errors{syntaxError(name, data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{{File: name, Pos: nodePos(&extra), Msg: "more than one YAML document: a routes file holds exactly one"}}
	} else if !errors.Is(err, io.EOF) {
		return nil, Errors{syntaxError(name, data, err)}
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, Errors{{File: name, Pos: nodePos(&root), Msg: "the file must be a mapping with keys such as version, upstreams and routes"}}
	}
	return &root, nil
}

// syntaxError turns a yaml.v3 error ("yaml: line 3: ...") into a located Error.
// parserError reports whether a go-yaml message is one of its parser's
// (parserc.go), not its scanner's.
func parserError(msg string) bool {
	for _, m := range []string{"did not find expected <document start>", "did not find expected key", "did not find expected '-' indicator", "did not find expected node content", "did not find expected ',' or ']'", "did not find expected ',' or '}'"} {
		if strings.HasSuffix(msg, m) {
			return true
		}
	}
	return false
}

func syntaxError(name string, data []byte, err error) *Error {
	msg := err.Error()
	e := &Error{File: name, Pos: Pos{1, 1}, Msg: msg}
	rest, ok := strings.CutPrefix(msg, "yaml: line ")
	if ok {
		var line int
		if _, scanErr := fmt.Sscanf(rest, "%d:", &line); scanErr == nil && line >= 0 {
			// go-yaml counts lines from 1 for the scanner's errors but
			// reports the parser's from 0 (the line of the construct left
			// open): one line early, before the problem.
			if parserError(rest) {
				line++
			}
			// An error found at the end of the input (a bracket never
			// closed) points at the last line that has something on it.
			e.Pos.Line = min(max(line, 1), lastContentLine(data))
			if i := strings.Index(rest, ": "); i >= 0 {
				e.Msg = "YAML syntax: " + rest[i+2:]
			}
		}
	} else {
		e.Msg = "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")
	}
	return e
}

func lastContentLine(data []byte) int {
	lines := strings.Split(strings.TrimRight(string(data), " \t\r\n"), "\n")
	return max(len(lines), 1)
}

// orNoEnv is env, or an empty environment: references are always expanded
// (or refused) when a file is loaded, never passed on as text.
func orNoEnv(env LookupEnv) LookupEnv {
	if env == nil {
		return func(string) (string, bool) { return "", false }
	}
	return env
}
