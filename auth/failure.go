package auth

import (
	"net/http"
	"strings"

	"github.com/causewayhq/causeway/internal/httperr"
)

// Reason is why a request was refused. The set is closed so that
// causeway_auth_failures_total{reason} stays bounded whatever clients send.
type Reason string

// The reasons, one label value each.
const (
	ReasonNone         Reason = ""              // not a failure
	ReasonMissing      Reason = "missing"       // no credential where the authenticator looks
	ReasonMalformed    Reason = "malformed"     // not a JWT, bad base64/JSON, several Authorization headers
	ReasonOversized    Reason = "oversized"     // longer than max_token_bytes
	ReasonAlgorithm    Reason = "bad_algorithm" // alg not allowed (none, confusion) or unknown
	ReasonSignature    Reason = "bad_signature"
	ReasonUnknownKID   Reason = "unknown_kid" // no key with the token's kid, even after a refresh
	ReasonNoKeys       Reason = "no_keys"     // the JWKS has never been fetched
	ReasonExpired      Reason = "expired"
	ReasonNotYetValid  Reason = "not_yet_valid" // nbf or iat in the future
	ReasonIssuer       Reason = "bad_issuer"
	ReasonAudience     Reason = "bad_audience"
	ReasonClaims       Reason = "invalid_claims" // exp missing, a registered claim of the wrong type
	ReasonUnknownKey   Reason = "unknown_key"    // an API key not in the keys file
	ReasonMissingClaim Reason = "missing_claim"  // authenticated, but require_claims not met: 403
	// ReasonBadCredentials is a basic user name or password that does not
	// match; which of the two is never said.
	ReasonBadCredentials  Reason = "bad_credentials"
	ReasonTooManyFailures Reason = "too_many_failures" // over a basic failure_limit: 429
	// ext_authz: the server denied (its answer goes to the client), could
	// not be asked (on_error: deny), or the body was over body.max_bytes.
	ReasonDenied           Reason = "denied"
	ReasonAuthzUnavailable Reason = "authz_unavailable"
	ReasonBodyTooLarge     Reason = "body_too_large"
	// oidc: a session past its idle or absolute timeout, or whose tokens
	// expired and could not be refreshed; a callback that could not
	// complete a sign-in (state, nonce, code or ID token refused).
	ReasonSessionExpired Reason = "session_expired"
	ReasonLoginFailed    Reason = "login_failed"
)

// Reasons lists every Reason, for pre-initialising metrics and for tests.
var Reasons = []Reason{
	ReasonMissing, ReasonMalformed, ReasonOversized, ReasonAlgorithm, ReasonSignature,
	ReasonUnknownKID, ReasonNoKeys, ReasonExpired, ReasonNotYetValid, ReasonIssuer,
	ReasonAudience, ReasonClaims, ReasonUnknownKey, ReasonMissingClaim,
	ReasonBadCredentials, ReasonTooManyFailures, ReasonDenied, ReasonAuthzUnavailable, ReasonBodyTooLarge,
	ReasonSessionExpired, ReasonLoginFailed,
}

// description is what the client is told: fixed text per reason, so nothing
// of the token, the keys or the configuration leaks into a response.
func (r Reason) description() string {
	switch r {
	case ReasonMissing:
		return "authentication required"
	case ReasonMalformed:
		return "the credential is malformed"
	case ReasonOversized:
		return "the token is too large"
	case ReasonAlgorithm:
		return "the token's signing algorithm is not accepted"
	case ReasonSignature:
		return "the token's signature is invalid"
	case ReasonUnknownKID:
		return "the token's signing key is unknown"
	case ReasonNoKeys:
		return "the token cannot be verified yet"
	case ReasonExpired:
		return "the token has expired"
	case ReasonNotYetValid:
		return "the token is not valid yet"
	case ReasonIssuer:
		return "the token's issuer is not accepted"
	case ReasonAudience:
		return "the token's audience is not accepted"
	case ReasonClaims:
		return "the token's claims are invalid"
	case ReasonUnknownKey:
		return "the API key is not valid"
	case ReasonMissingClaim:
		return "the credential lacks a required claim"
	case ReasonBadCredentials:
		return "the user name or password is not valid"
	case ReasonTooManyFailures:
		return "too many failed attempts: try again later"
	case ReasonDenied:
		return "the request is not authorized"
	case ReasonAuthzUnavailable:
		return "the request could not be authorized"
	case ReasonBodyTooLarge:
		return "the request body is too large to be authorized"
	case ReasonSessionExpired:
		return "the session has expired"
	case ReasonLoginFailed:
		return "the sign-in could not be completed"
	}
	return "authentication failed"
}

// refuse answers a refused request: 401 with one challenge per
// authenticator of the route (RFC 7235 allows several), the failing one
// carrying the RFC 6750 error; 403 for a missing claim.
func refuse(w http.ResponseWriter, r *http.Request, auths []authenticator, failed authenticator, reason Reason) {
	status := http.StatusUnauthorized
	if reason == ReasonMissingClaim {
		status = http.StatusForbidden
	}
	for _, a := range auths {
		if a.scheme() == "" {
			continue // ext_authz: the server's denial carries any challenge; oidc: a session has no scheme
		}
		if a.scheme() == "Basic" {
			// RFC 7617 has no error parameters; a browser shows its login
			// dialog for this challenge, in UTF-8.
			if status == http.StatusUnauthorized {
				w.Header().Add("WWW-Authenticate", challenge("Basic", a.realm(), "", "")+`, charset="UTF-8"`)
			}
			continue
		}
		var code string
		switch {
		case a != failed:
		case reason == ReasonMissingClaim:
			code = "insufficient_scope"
		case reason != ReasonMissing:
			// RFC 6750 3.1: a request without credentials gets no error code.
			code = "invalid_token"
		}
		if status == http.StatusForbidden && a != failed {
			continue
		}
		w.Header().Add("WWW-Authenticate", challenge(a.scheme(), a.realm(), code, reason.description()))
	}
	httperr.Write(w, r, status, reason.description())
}

func challenge(scheme, realm, code, desc string) string {
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString(` realm="`)
	b.WriteString(quoteEscape(realm))
	b.WriteByte('"')
	if code != "" {
		b.WriteString(`, error="`)
		b.WriteString(code)
		b.WriteString(`", error_description="`)
		b.WriteString(quoteEscape(desc))
		b.WriteByte('"')
	}
	return b.String()
}

// quoteEscape makes s safe inside a quoted-string. Realms come from the
// routes file, but a header must never be splittable.
func quoteEscape(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '"' || r == '\\':
			return '\''
		case r < 0x20 || r == 0x7f:
			return -1
		}
		return r
	}, s)
}

// unavailable answers a request its authenticator could not decide because
// a service it depends on is down (on_error: deny): status_on_error with
// the edge's error body.
func unavailable(status int) refusal {
	return func(w http.ResponseWriter, r *http.Request) {
		httperr.Write(w, r, status, ReasonAuthzUnavailable.description())
	}
}
