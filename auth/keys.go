package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
)

// minRSABits refuses RSA keys that no identity provider should still use.
const minRSABits = 2048

// pubKey is one verification key. kid and alg come from a JWK ("" for a
// PEM file, which has neither).
type pubKey struct {
	kid string
	alg string
	key crypto.PublicKey
}

// fits reports whether k may verify a token signed with alg: the key type
// and curve must be the algorithm's, and a JWK that names its alg must name
// this one. This is what keeps an RSA key from ever being fed to HMAC.
func (k pubKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch key := k.key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return key.Curve == elliptic.P256()
		case "ES384":
			return key.Curve == elliptic.P384()
		case "ES512":
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// loadPEMKeys reads every public key in a PEM file: PUBLIC KEY (RSA, EC,
// Ed25519), RSA PUBLIC KEY, or CERTIFICATE.
func loadPEMKeys(path string) ([]pubKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []pubKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var key crypto.PublicKey
		switch b.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				key = c.PublicKey
			}
		default:
			if strings.Contains(b.Type, "PRIVATE") {
				// Say so without echoing anything of it.
				return nil, fmt.Errorf("holds a private key (%s): give the edge only the public key", b.Type)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s block %d: %w", b.Type, len(keys)+1, err)
		}
		if err := checkKey(key); err != nil {
			return nil, err
		}
		keys = append(keys, pubKey{key: key})
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key or certificate found")
	}
	return keys, nil
}

func checkKey(key crypto.PublicKey) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits: at least %d are required", k.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported key type %T", key)
	}
	return nil
}

// jwk is the part of RFC 7517 keys Causeway reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS decodes a JWK Set. Keys that cannot verify signatures here
// (encryption keys, symmetric keys, unknown types or curves) are skipped and
// reported in skipped, so one odd key does not take the others down.
func parseJWKS(data []byte) (keys []pubKey, skipped []string, err error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, nil, fmt.Errorf("decoding JWK set: %w", err)
	}
	for i, raw := range set.Keys {
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil {
			skipped = append(skipped, fmt.Sprintf("keys[%d]: %v", i, err))
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			skipped = append(skipped, fmt.Sprintf("keys[%d] (kid %q): use %q", i, k.Kid, k.Use))
			continue
		}
		pk, err := k.publicKey()
		if err == nil {
			err = checkKey(pk)
		}
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("keys[%d] (kid %q): %v", i, k.Kid, err))
			continue
		}
		keys = append(keys, pubKey{kid: k.Kid, alg: k.Alg, key: pk})
	}
	if len(keys) == 0 {
		return nil, skipped, fmt.Errorf("no usable signing key among %d", len(set.Keys))
	}
	return keys, skipped, nil
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		n, err := b64int(k.N, "n")
		if err != nil {
			return nil, err
		}
		e, err := b64int(k.E, "e")
		if err != nil {
			return nil, err
		}
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
			return nil, errors.New("RSA exponent out of range")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported EC curve %q", k.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err := b64fixed(k.X, "x", size)
		if err != nil {
			return nil, err
		}
		y, err := b64fixed(k.Y, "y", size)
		if err != nil {
			return nil, err
		}
		// ParseUncompressedPublicKey checks the point is on the curve: an
		// off-curve point is the invalid-curve attack.
		point := append(append([]byte{4}, x...), y...)
		return ecdsa.ParseUncompressedPublicKey(curve, point)
	case "OKP":
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported OKP curve %q", k.Crv)
		}
		x, err := b64fixed(k.X, "x", ed25519.PublicKeySize)
		if err != nil {
			return nil, err
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("unsupported key type %q", k.Kty)
}

func b64int(s, field string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("field %q is not base64url", field)
	}
	return new(big.Int).SetBytes(b), nil
}

func b64fixed(s, field string, size int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("field %q is not %d base64url bytes", field, size)
	}
	return b, nil
}
