package edgetls

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"path"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// The issuer places orders with x/crypto/acme itself rather than through
// autocert.Manager.GetCertificate: autocert keeps every certificate it has
// served in memory, serves it even once expired, and renews it on timers of
// its own (real time, 30 to 60 minutes between failed attempts, no logs, no
// count, no way to stop them). The issuer owns renewal instead (renew.go).
// autocert still answers the CA's challenges (its HTTPHandler and its
// TLS-ALPN-01 certificates), reading the tokens the issuer writes into the
// shared cache under autocert's own key names and formats, so a cache_dir
// or Redis cache written by either stays readable by both.

// accountKeyName is where autocert keeps the ACME account key.
const accountKeyName = "acme_account+key"

// acmeClient returns the ACME client, with the account key loaded from the
// cache (or made and stored) and the account registered, once.
func (iss *acmeIssuer) acmeClient(ctx context.Context) (*acme.Client, error) {
	iss.clientMu.Lock()
	defer iss.clientMu.Unlock()
	if iss.registered {
		return iss.client, nil
	}
	if iss.client.Key == nil {
		key, err := iss.accountKey(ctx)
		if err != nil {
			return nil, fmt.Errorf("account key: %w", err)
		}
		iss.client.Key = key
	}
	var contact []string
	if iss.email != "" {
		contact = []string{"mailto:" + iss.email}
	}
	_, err := iss.client.Register(ctx, &acme.Account{Contact: contact}, acme.AcceptTOS)
	if err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return nil, fmt.Errorf("registering the account: %w", err)
	}
	iss.registered = true
	return iss.client, nil
}

func (iss *acmeIssuer) accountKey(ctx context.Context) (crypto.Signer, error) {
	data, err := iss.cache.Get(ctx, accountKeyName)
	switch {
	case err == nil:
		b, _ := pem.Decode(data)
		if b == nil {
			return nil, errors.New("the cached account key is not PEM")
		}
		return parseKey(b.Bytes)
	case !errors.Is(err, autocert.ErrCacheMiss):
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := iss.cache.Put(ctx, accountKeyName, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
		return nil, err
	}
	return key, nil
}

// order obtains a new certificate for name from the CA and writes it to the
// cache under ck. Like autocert, it tries TLS-ALPN-01 first and, when the
// http listener serves challenges, HTTP-01 with a new order if that fails.
func (iss *acmeIssuer) order(ctx context.Context, ck, name string) (*tls.Certificate, error) {
	client, err := iss.acmeClient(ctx)
	if err != nil {
		return nil, err
	}
	types := []string{"tls-alpn-01"}
	if iss.http01.Load() {
		types = append(types, "http-01")
	}
	var o *acme.Order
	var errs []error
	for _, typ := range types {
		o, err = client.AuthorizeOrder(ctx, acme.DomainIDs(name))
		if err != nil {
			return nil, fmt.Errorf("new order: %w", err)
		}
		if o.Status == acme.StatusReady || o.Status == acme.StatusValid {
			break
		}
		if o.Status != acme.StatusPending {
			return nil, fmt.Errorf("new order: status %q", o.Status)
		}
		if err = iss.authorize(ctx, client, o, name, typ); err == nil {
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", typ, err))
		if ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return nil, errors.Join(errs...)
	}
	if o, err = client.WaitOrder(ctx, o.URI); err != nil {
		return nil, fmt.Errorf("waiting for the order: %w", err)
	}
	var key crypto.Signer
	if rsaVariant(ck) {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}, key)
	if err != nil {
		return nil, err
	}
	der, _, err := client.CreateCertFromOrder(ctx, o, csr, true)
	if err != nil {
		return nil, fmt.Errorf("finalizing: %w", err)
	}
	data, err := encodeCacheEntry(key, der)
	if err != nil {
		return nil, err
	}
	cert, err := certFromCache(data, name, iss.now())
	if err != nil {
		return nil, fmt.Errorf("the CA's certificate: %w", err)
	}
	if err := iss.cache.Put(ctx, ck, data); err != nil {
		return nil, fmt.Errorf("caching the certificate: %w", err)
	}
	return cert, nil
}

// authorize answers the order's pending authorizations with challenges of
// type typ and waits until the CA has validated them.
func (iss *acmeIssuer) authorize(ctx context.Context, client *acme.Client, o *acme.Order, name, typ string) error {
	for _, u := range o.AuthzURLs {
		z, err := client.GetAuthorization(ctx, u)
		if err != nil {
			return err
		}
		if z.Status == acme.StatusValid {
			continue
		}
		if z.Status != acme.StatusPending {
			return fmt.Errorf("authorization status %q", z.Status)
		}
		var chal *acme.Challenge
		for _, c := range z.Challenges {
			if c.Type == typ {
				chal = c
			}
		}
		if chal == nil {
			return fmt.Errorf("the CA offers no %s challenge", typ)
		}
		cleanup, err := iss.fulfill(ctx, client, chal, name)
		if err != nil {
			return err
		}
		_, err = client.Accept(ctx, chal)
		if err == nil {
			_, err = client.WaitAuthorization(ctx, z.URI)
		}
		cleanup()
		if err != nil {
			return err
		}
	}
	return nil
}

// fulfill writes the challenge response where autocert's handlers find it:
// in the cache, under autocert's key names, so that any replica answers.
func (iss *acmeIssuer) fulfill(ctx context.Context, client *acme.Client, chal *acme.Challenge, name string) (func(), error) {
	var key string
	var data []byte
	switch chal.Type {
	case "tls-alpn-01":
		cert, err := client.TLSALPN01ChallengeCert(chal.Token, name)
		if err != nil {
			return nil, err
		}
		signer, ok := cert.PrivateKey.(crypto.Signer)
		if !ok {
			return nil, errors.New("challenge certificate key cannot sign")
		}
		if data, err = encodeCacheEntry(signer, cert.Certificate); err != nil {
			return nil, err
		}
		key = name + "+token"
	case "http-01":
		resp, err := client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return nil, err
		}
		key, data = path.Base(client.HTTP01ChallengePath(chal.Token))+"+http-01", []byte(resp)
	default:
		return nil, fmt.Errorf("unknown challenge type %q", chal.Type)
	}
	if err := iss.cache.Put(ctx, key, data); err != nil {
		return nil, fmt.Errorf("storing the %s response: %w", chal.Type, err)
	}
	return func() {
		// The order's context may be what ended it: clean up on one of our own.
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = iss.cache.Delete(dctx, key)
	}, nil
}

// encodeCacheEntry writes a key and chain as autocert does: the private key
// PEM, then the certificates.
func encodeCacheEntry(key crypto.Signer, chain [][]byte) ([]byte, error) {
	var buf bytes.Buffer
	var b *pem.Block
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		b = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case *rsa.PrivateKey:
		b = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	default:
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	if err := pem.Encode(&buf, b); err != nil {
		return nil, err
	}
	for _, der := range chain {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// certFromCache parses a cache entry into a certificate for name, refusing
// one that has expired at now, does not name the host, or whose key does
// not match.
func certFromCache(data []byte, name string, now time.Time) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(data, data)
	if err != nil {
		return nil, err
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
		cert.Leaf = leaf
	}
	// Only expiry is checked: a NotBefore a moment ahead of our clock is the
	// CA's clock, and its certificate is still the one to serve.
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate expired at %s", leaf.NotAfter)
	}
	if err := leaf.VerifyHostname(name); err != nil {
		return nil, err
	}
	return &cert, nil
}

func parseKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("unknown private key type")
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("private key cannot sign")
	}
	return s, nil
}

// rsaVariant reports whether ck is the RSA certificate of a name, for
// clients without ECDSA (autocert's "+rsa" cache key).
func rsaVariant(ck string) bool { return len(ck) > 4 && ck[len(ck)-4:] == "+rsa" }
