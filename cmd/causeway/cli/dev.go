package cli

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/causewayhq/causeway/mesh"
)

// causeway dev: helpers for trying routes locally, never for production
// keys: a signing key and JWKS for JWT routes, and API keys in a keys file.

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	dev, _ := lookupCommand("dev")
	var sub Command
	ok := false
	if len(args) > 0 {
		sub, ok = dev.findSub(args[0])
	}
	if !ok {
		fmt.Fprintln(stderr, "usage: causeway dev jwt|apikey [flags]   ('causeway dev jwt -h' for the flags)")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	return sub.Run(ctx, args[1:], stdout, stderr)
}

// claimFlags collects -claim NAME=VALUE; a value that parses as JSON (a
// number, a list) is kept as such, anything else is a string.
type claimFlags map[string]any

func (c claimFlags) String() string { return "" }
func (c claimFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=VALUE, found %q", v)
	}
	var j any
	if json.Unmarshal([]byte(value), &j) == nil {
		c[name] = j
	} else {
		c[name] = value
	}
	return nil
}

type devJWTOpts struct {
	dir, alg, iss, aud, sub *string
	ttl                     *time.Duration
	claims                  claimFlags
}

func devJWTFlags() (*flag.FlagSet, devJWTOpts) {
	fs := newFlagSet("dev jwt")
	o := devJWTOpts{
		dir:    fs.String("dir", "", "write dev-jwt-key.pem, dev-jwt-pub.pem and jwks.json in `DIR` (required; reused when present)"),
		alg:    new(string),
		iss:    fs.String("iss", "https://id.local/", "issuer (iss)"),
		aud:    fs.String("aud", "api", "audience (aud)"),
		sub:    fs.String("sub", "dev-user", "subject (sub)"),
		ttl:    fs.Duration("ttl", time.Hour, "lifetime (exp - iat)"),
		claims: claimFlags{},
	}
	enumVar(fs, o.alg, "alg", "RS256", "the signing `ALG` when the key is made: RS256 or ES256", "RS256", "ES256")
	fs.Var(o.claims, "claim", "an extra claim `NAME=VALUE` (repeatable; JSON values such as [\"a\",\"b\"] or 42 stay typed)")
	return fs, o
}

func runDevJWT(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs, o := devJWTFlags()
	withHelp(fs, stderr)
	dir, alg, iss, aud, sub, ttl, claims := o.dir, o.alg, o.iss, o.aud, o.sub, o.ttl, o.claims
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *dir == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	key, kid, created, err := devSigningKey(*dir, *alg)
	if err != nil {
		fmt.Fprintln(stderr, "causeway dev jwt:", err)
		return 1
	}
	if created {
		fmt.Fprintf(stderr, "made a signing key in %s; an authenticator that accepts its tokens:\n"+
			"  jwt: {issuer: %q, audiences: [%q], algorithms: [%s], public_key_files: [%q]}\n"+
			"  (or serve %s and point jwks_url at it)\n",
			*dir, *iss, *aud, signingAlg(key), filepath.Join(*dir, "dev-jwt-pub.pem"), filepath.Join(*dir, "jwks.json"))
	}
	now := time.Now()
	mc := jwt.MapClaims{"iss": *iss, "aud": *aud, "sub": *sub, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(*ttl).Unix()}
	for k, v := range claims {
		mc[k] = v
	}
	method := jwt.GetSigningMethod(signingAlg(key))
	tok := jwt.NewWithClaims(method, mc)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		fmt.Fprintln(stderr, "causeway dev jwt:", err)
		return 1
	}
	fmt.Fprintln(stdout, s)
	return 0
}

func signingAlg(key crypto.Signer) string {
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		return "ES256"
	}
	return "RS256"
}

// devSigningKey loads dir's key, or makes one with its public key and JWKS.
func devSigningKey(dir, alg string) (crypto.Signer, string, bool, error) {
	keyPath := filepath.Join(dir, "dev-jwt-key.pem")
	if data, err := os.ReadFile(keyPath); err == nil {
		b, _ := pem.Decode(data)
		if b == nil {
			return nil, "", false, fmt.Errorf("%s: no PEM block", keyPath)
		}
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, "", false, fmt.Errorf("%s: %w", keyPath, err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, "", false, fmt.Errorf("%s: not a signing key", keyPath)
		}
		kid, err := keyID(signer.Public())
		return signer, kid, false, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, "", false, err
	}
	var signer crypto.Signer
	var err error
	switch alg {
	case "RS256":
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, "", false, fmt.Errorf("-alg %q: want RS256 or ES256", alg)
	}
	if err != nil {
		return nil, "", false, err
	}
	kid, err := keyID(signer.Public())
	if err != nil {
		return nil, "", false, err
	}
	priv, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, "", false, err
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, "", false, err
	}
	jwks, err := json.MarshalIndent(map[string]any{"keys": []any{jwk(signer.Public(), kid)}}, "", "  ")
	if err != nil {
		return nil, "", false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", false, err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"dev-jwt-pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644},
		{"jwks.json", append(jwks, '\n'), 0o644},
		// The private key last: its presence means the set is complete.
		{"dev-jwt-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600},
	} {
		if err := mesh.WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return nil, "", false, err
		}
	}
	return signer, kid, true, nil
}

// keyID is the RFC 7638 thumbprint's first 16 bytes, base64url.
func keyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:16]), nil
}

func jwk(pub crypto.PublicKey, kid string) map[string]any {
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		pt, _ := k.ECDH()
		raw := pt.Bytes() // 0x04 || X || Y
		n := (len(raw) - 1) / 2
		return map[string]any{"kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256", "x": b64(raw[1 : 1+n]), "y": b64(raw[1+n:])}
	}
	return nil
}

type devAPIKeyOpts struct{ keys, name, key *string }

func devAPIKeyFlags() (*flag.FlagSet, devAPIKeyOpts) {
	fs := newFlagSet("dev apikey")
	return fs, devAPIKeyOpts{
		keys: fs.String("keys", "", "the keys `FILE` to add to (created with mode 0600 when missing; required)"),
		name: fs.String("name", "", "the key's name: what logs, metrics and forward_name show (required)"),
		key:  fs.String("key", "", "the key itself (default: 32 random bytes, base64url)"),
	}
}

func runDevAPIKey(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs, o := devAPIKeyFlags()
	withHelp(fs, stderr)
	keys, name, key := o.keys, o.name, o.key
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *keys == "" || *name == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if strings.ContainsAny(*name, ": \t\r\n#") {
		fmt.Fprintf(stderr, "causeway dev apikey: -name %q: no ':', '#' or white space\n", *name)
		return 2
	}
	existing, err := os.ReadFile(*keys)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(stderr, "causeway dev apikey:", err)
		return 1
	}
	for _, line := range strings.Split(string(existing), "\n") {
		if n, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && n == *name {
			fmt.Fprintf(stderr, "causeway dev apikey: %s already has a key named %q\n", *keys, *name)
			return 1
		}
	}
	k := *key
	if k == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			fmt.Fprintln(stderr, "causeway dev apikey:", err)
			return 1
		}
		k = base64.RawURLEncoding.EncodeToString(b)
	}
	sum := sha256.Sum256([]byte(k))
	out := string(existing)
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	out += *name + ":" + hex.EncodeToString(sum[:]) + "\n"
	// Written whole and renamed into place: the edge watching the file
	// never reads half of it.
	if err := mesh.WriteFileAtomic(*keys, []byte(out), 0o600); err != nil {
		fmt.Fprintln(stderr, "causeway dev apikey:", err)
		return 1
	}
	fmt.Fprintln(stdout, k)
	return 0
}
