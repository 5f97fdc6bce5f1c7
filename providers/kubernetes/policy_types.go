package kubernetes

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// CausewayPolicy is Causeway's own policy: authentication, rate limits and
// plugins for the routes of Gateways, HTTPRoutes, GRPCRoutes or single
// rules, attached by targetRefs as Gateway API policy attachment (GEP-713)
// describes. Its CustomResourceDefinition is in
// examples/kubernetes/gateway-api/crd; the edge reads it with a dynamic
// informer, so these types need no generated client.
type CausewayPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CausewayPolicySpec     `json:"spec"`
	Status gatewayv1.PolicyStatus `json:"status,omitempty"`
}

// PolicyGVR is the policy's API group, version and resource.
var PolicyGVR = schema.GroupVersionResource{Group: "causeway.dev", Version: "v1alpha1", Resource: "causewaypolicies"}

// PolicyKind is the policy's kind.
const PolicyKind = "CausewayPolicy"

// CausewayPolicySpec is what a policy asks for, and where.
type CausewayPolicySpec struct {
	// TargetRefs are the Gateways, HTTPRoutes and GRPCRoutes of the
	// policy's namespace it applies to; sectionName picks a route's rule
	// by its name.
	TargetRefs []gatewayv1.LocalPolicyTargetReferenceWithSectionName `json:"targetRefs"`

	// Authenticators are tried in order; the first that accepts the
	// request wins, and a request none accepts is refused before any
	// upstream sees it.
	Authenticators []PolicyAuthenticator `json:"authenticators,omitempty"`
	// RequireClaims are claims the authenticated principal must carry,
	// as the routes file's require_claims.
	RequireClaims map[string]string `json:"requireClaims,omitempty"`
	// RateLimits all apply, in order.
	RateLimits []PolicyRateLimit `json:"rateLimits,omitempty"`
	// Plugins run after the rule's own filters, in order.
	Plugins []PolicyPlugin `json:"plugins,omitempty"`
}

// PolicyAuthenticator is one authenticator: one of the edge's routes file
// by name (ref), or one defined here (config) whose secrets come from
// Secrets of the policy's namespace.
type PolicyAuthenticator struct {
	// Ref names an authenticator of the edge's routes file.
	Ref string `json:"ref,omitempty"`
	// Config is an authenticator as the routes file writes one (jwt,
	// api_key, basic, ext_authz or oidc, with the file's keys), without
	// file paths or environment variables: its secrets come from Secrets.
	Config json.RawMessage `json:"config,omitempty"`
	// Secrets name where the authenticator's secrets are.
	Secrets *AuthenticatorSecrets `json:"secrets,omitempty"`
}

// AuthenticatorSecrets are the secrets of an authenticator defined in a
// policy, each a key of an Opaque Secret in the policy's namespace.
type AuthenticatorSecrets struct {
	// HMACSecret is a jwt authenticator's HMAC secret.
	HMACSecret *SecretKeyRef `json:"hmacSecret,omitempty"`
	// APIKeys is a Secret whose every entry is a client's name and its
	// API key (the key itself: the edge keeps only its SHA-256).
	APIKeys *SecretRef `json:"apiKeys,omitempty"`
	// Htpasswd is a basic authenticator's user:hash lines.
	Htpasswd *SecretKeyRef `json:"htpasswd,omitempty"`
	// ClientSecret is an oidc authenticator's client secret.
	ClientSecret *SecretKeyRef `json:"clientSecret,omitempty"`
	// SessionKeys is an oidc authenticator's session sealing keys.
	SessionKeys *SecretKeyRef `json:"sessionKeys,omitempty"`
}

// SecretRef names a Secret of the policy's namespace.
type SecretRef struct {
	Name string `json:"name"`
}

// SecretKeyRef names one key of a Secret of the policy's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// PolicyRateLimit is a rate limit of the edge's routes file by name (ref),
// or one defined here (config, with the file's keys).
type PolicyRateLimit struct {
	Ref    string          `json:"ref,omitempty"`
	Config json.RawMessage `json:"config,omitempty"`
}

// PolicyPlugin is a plugin instance of the edge's routes file by name
// (ref), or one defined here: the registered plugin (use) and its config.
type PolicyPlugin struct {
	Ref    string          `json:"ref,omitempty"`
	Use    string          `json:"use,omitempty"`
	Config json.RawMessage `json:"config,omitempty"`
}
