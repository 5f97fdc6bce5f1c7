package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/causewayhq/causeway/routes"
)

// maxAPIKeyBytes refuses absurd keys before hashing them.
const maxAPIKeyBytes = 1024

// apiKey is one line of a keys file: only the SHA-256 of the key is held.
type apiKey struct {
	sum [sha256.Size]byte
	p   *Principal // shared by every request with this key; read-only
}

// apiKeyAuth authenticates by a key compared against the keys file.
type apiKeyAuth struct {
	authName    string
	src         source
	keep        bool
	forwardName string
	keys        []apiKey
}

var _ authenticator = (*apiKeyAuth)(nil)

// newAPIKeyAuth builds an API-key authenticator; from names where keys
// held in memory (c.Keys) came from, for errors.
func newAPIKeyAuth(name, from string, c *routes.APIKey) (*apiKeyAuth, error) {
	a := &apiKeyAuth{authName: name, keep: c.KeepToken}
	switch {
	case c.Query != "":
		a.src = source{kind: fromQuery, name: c.Query}
	case c.Header != "":
		a.src = source{kind: fromHeader, name: http.CanonicalHeaderKey(c.Header)}
	default:
		a.src = source{kind: fromHeader, name: routes.DefaultAPIKeyHeader}
	}
	if c.ForwardName != "" {
		a.forwardName = http.CanonicalHeaderKey(c.ForwardName)
	}
	var (
		keys []apiKey
		err  error
	)
	switch {
	case len(c.Keys) > 0:
		keys, err = parseKeys(from, c.Keys, name)
	case c.KeysFile == "":
		return nil, fmt.Errorf("keys_file is required")
	default:
		keys, err = loadKeysFile(c.KeysFile, name)
	}
	if err != nil {
		return nil, &keyError{key: "api_key.keys_file", err: err}
	}
	a.keys = keys
	return a, nil
}

// loadKeysFile reads lines of "name:sha256hex"; blank lines and lines
// starting with # are ignored. Errors give file:line and never the line's
// content beyond the name.
func loadKeysFile(path, authName string) ([]apiKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the keys file: %w", err)
	}
	return parseKeys(path, data, authName)
}

// parseKeys reads the lines of a keys file from data; path names it in
// errors.
func parseKeys(path string, data []byte, authName string) ([]apiKey, error) {
	var keys []apiKey
	names := map[string]int{}
	sums := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hexSum, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		hexSum = strings.TrimSpace(hexSum)
		if !ok || name == "" {
			return nil, fmt.Errorf("%s:%d: want name:sha256hex", path, n)
		}
		// The name goes into forward_name headers and rate-limit keys.
		if !httpguts.ValidHeaderFieldValue(name) || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("%s:%d: key name %q: use printable characters without spaces", path, n, name)
		}
		var sum [sha256.Size]byte
		if b, err := hex.DecodeString(hexSum); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s:%d: key %q: want 64 hex digits (the SHA-256 of the key, not the key)", path, n, name)
		} else {
			copy(sum[:], b)
		}
		if prev, dup := names[name]; dup {
			return nil, fmt.Errorf("%s:%d: key name %q already used on line %d", path, n, name, prev)
		}
		if prev, dup := sums[sum]; dup {
			return nil, fmt.Errorf("%s:%d: key %q has the same hash as line %d", path, n, name, prev)
		}
		names[name], sums[sum] = n, n
		keys = append(keys, apiKey{sum: sum, p: &Principal{Authenticator: authName, Subject: name, KeyName: name}})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no keys (lines of name:sha256hex)", path)
	}
	return keys, nil
}

func (a *apiKeyAuth) name() string     { return a.authName }
func (a *apiKeyAuth) realm() string    { return a.authName }
func (a *apiKeyAuth) scheme() string   { return "ApiKey" }
func (a *apiKeyAuth) source() source   { return a.src }
func (a *apiKeyAuth) keepToken() bool  { return a.keep }
func (a *apiKeyAuth) jwksCache() *jwks { return nil }

func (a *apiKeyAuth) forwardedHeaders() []string {
	if a.forwardName == "" {
		return nil
	}
	return []string{a.forwardName}
}

func (a *apiKeyAuth) forwardTo(h http.Header, p *Principal) {
	if a.forwardName != "" {
		h[a.forwardName] = []string{p.KeyName}
	}
}

func (a *apiKeyAuth) authenticate(r *http.Request) (*Principal, Reason) {
	key, reason := a.src.extract(r)
	if reason != ReasonNone {
		return nil, reason
	}
	if len(key) > maxAPIKeyBytes {
		return nil, ReasonOversized
	}
	if p := a.match(key); p != nil {
		return p, ReasonNone
	}
	return nil, ReasonUnknownKey
}

// match compares the key's hash with every stored hash in constant time and
// without stopping at a match, so timing says nothing about which key, or
// how much of one, matched.
func (a *apiKeyAuth) match(key string) *Principal {
	sum := sha256.Sum256([]byte(key))
	var found *Principal
	for i := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], a.keys[i].sum[:]) == 1 {
			found = a.keys[i].p
		}
	}
	return found
}
