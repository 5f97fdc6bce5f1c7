package routes

import (
	"net/url"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Redacted is what a masked value shows.
const Redacted = "REDACTED"

// A field tagged secret:"url" holds a URL whose credentials (userinfo, and
// query parameters with credential-like names) are masked when shown; one
// tagged secret:"value" is masked whole. TestSecretFieldsAreTagged fails for
// a field whose name looks secret-bearing and that carries neither the tag
// nor a reason in that test's list, so a new credential cannot slip into
// /config unmasked.

// View renders v (a *File or a *Sidecar) with the files' own key names, the
// way the admin API shows it, with every credential masked: fields tagged
// secret, credentials inside any URL anywhere, and, inside plugin configs
// (whose shape Causeway does not know), the value of every key that names
// a credential or a credential-bearing header.
func View(v any) (any, error) {
	data, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return nil, err
	}
	return redactTyped(tree, reflect.TypeOf(v)), nil
}

// redactTyped walks the rendered tree beside the Go type it came from.
func redactTyped(v any, t reflect.Type) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawType {
		return redactFree(v)
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return redactFree(v)
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			val, ok := m[name]
			if !ok {
				continue
			}
			switch f.Tag.Get("secret") {
			case "value":
				m[name] = Redacted
			case "url":
				m[name] = redactFree(val)
			default:
				m[name] = redactTyped(val, f.Type)
			}
		}
		return m
	case reflect.Map:
		if m, ok := v.(map[string]any); ok {
			for k, e := range m {
				// A map keyed by header, query or claim names (a route's
				// match.headers, a split's headers): a value under a
				// credential-like name is a credential, typed or not
				// (match.headers: {Authorization: "Bearer ..."}).
				if s, isString := e.(string); isString && s != "" && SecretName(k) {
					m[k] = Redacted
					continue
				}
				m[k] = redactTyped(e, t.Elem())
			}
			return m
		}
	case reflect.Slice, reflect.Array:
		if s, ok := v.([]any); ok {
			for i, e := range s {
				s[i] = redactTyped(e, t.Elem())
			}
			return s
		}
	}
	return redactFree(v)
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// redactFree masks a value of unknown shape: credentials in URLs, and
// values under credential-like keys.
func redactFree(v any) any {
	switch t := v.(type) {
	case string:
		return RedactURL(t)
	case map[string]any:
		for k, e := range t {
			if SecretName(k) {
				// Whatever a credential-named key holds: a string, a
				// number, a list of keys, a map of them.
				if s, isString := e.(string); !isString || s != "" {
					t[k] = Redacted
				}
				continue
			}
			t[k] = redactFree(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = redactFree(e)
		}
		return t
	}
	return v
}

// RedactNamed returns a copy of m (header, query or claim names to values)
// with the value under every credential-like name masked, for views that
// show a route's match or a split's headers. Nil stays nil.
func RedactNamed(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if v != "" && SecretName(k) {
			v = Redacted
		}
		out[k] = v
	}
	return out
}

// secretNames matches key and header names that carry credentials.
//
// Beyond the usual words: a bare or suffixed pass, pwd, passphrase, bearer,
// an auth or authentication header (X-Auth), hmac, jwt, salt, private and a
// dsn (a connection string carries its password outside any URL form).
var secretNames = regexp.MustCompile(`(?i)(authorization$|cookie$|token|secret|passw|passphrase|(^|[-_])pass$|pwd|bearer|(^|[-_])auth(entication)?$|hmac|jwt|salt|private|(^|[-_])dsn$|credential|api[-_]?key|(^|[-_])key$|^key[-_]|signature|session)`)

// SecretName reports whether a key (or header) name says its value is a
// credential. Names of where a secret is kept (…_env, …_file) are not.
func SecretName(name string) bool {
	l := strings.ToLower(name)
	if strings.HasSuffix(l, "_env") || strings.HasSuffix(l, "_file") || strings.HasSuffix(l, "_files") {
		return false
	}
	return secretNames.MatchString(l)
}

// RedactValue masks what looks like a credential in a value quoted in an
// error message: a URL's credentials (RedactURL), and the userinfo of an
// address written with one ("user:password@host:port", which is refused,
// but must not be echoed into logs and /config while it is).
func RedactValue(s string) string {
	if strings.Contains(s, "://") {
		return RedactURL(s)
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return Redacted + s[i:]
	}
	return s
}

// RedactURL masks the credentials of s if it is a URL with any: the
// userinfo (a user name alone can be a token), and the values of query
// and fragment parameters with credential-like names (and sig, code),
// whether pairs are separated by & or ; and whether the URL is absolute or
// relative ("/login?access_token=..."). Anything else is returned as it is.
func RedactURL(s string) string {
	out := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "(unparseable URL, " + Redacted + ")"
		}
		if u.User != nil {
			// user:password keeps the user (an account name) and masks the
			// password; a user name alone (https://TOKEN@host) is masked.
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), Redacted)
			} else {
				u.User = url.User(Redacted)
			}
			out = u.String()
		}
	}
	return redactParams(out)
}

// redactParams masks the values of credential-like parameters after the
// first ? or #, in place: the order and the separators are kept (a
// url.Values round trip would drop ;-separated pairs, the very ones a
// server may still read).
func redactParams(s string) string {
	start := strings.IndexAny(s, "?#")
	if start < 0 {
		return s
	}
	var b strings.Builder
	changed := false
	b.WriteString(s[:start+1])
	rest := s[start+1:]
	for len(rest) > 0 {
		end := strings.IndexAny(rest, "&;#")
		pair, sep := rest, ""
		if end >= 0 {
			pair, sep, rest = rest[:end], rest[end:end+1], rest[end+1:]
		} else {
			rest = ""
		}
		if k, v, ok := strings.Cut(pair, "="); ok && v != "" {
			if name, err := url.QueryUnescape(k); err == nil && (SecretName(name) || name == "sig" || name == "code") {
				pair, changed = k+"="+Redacted, true
			}
		}
		b.WriteString(pair)
		b.WriteString(sep)
	}
	if !changed {
		return s
	}
	return b.String()
}

// urlInText finds what looks like a URL inside free text: a scheme,
// "://", and what follows up to a space or a quote; or a path with a query
// ("/login?access_token=...").
var urlInText = regexp.MustCompile("[A-Za-z][A-Za-z0-9+.-]*://[^\\s\"'<>`]+|/[^\\s\"'<>`?#]*[?#][^\\s\"'<>`]+")

// RedactText masks the credentials of every URL inside s, a message that
// may quote a value of the file (a plugin's refusal: found
// "https://user:password@host/"): the userinfo, as RedactURL masks it, and
// credential-like parameters, in relative URLs too. A URL that does not
// parse is masked as well, where RedactURL would replace it whole: the
// message around it stays readable.
func RedactText(s string) string {
	if !strings.Contains(s, "://") && !strings.ContainsAny(s, "?#") {
		return s
	}
	return urlInText.ReplaceAllStringFunc(s, redactEmbeddedURL)
}

func redactEmbeddedURL(u string) string {
	i := strings.Index(u, "://")
	if i < 0 {
		return redactParams(u) // a relative URL: no userinfo
	}
	i += len("://")
	end := len(u)
	if j := strings.IndexAny(u[i:], "/?#"); j >= 0 {
		end = i + j
	}
	if at := strings.LastIndexByte(u[i:end], '@'); at >= 0 {
		userinfo := u[i : i+at]
		masked := Redacted
		if user, _, hasPassword := strings.Cut(userinfo, ":"); hasPassword {
			masked = user + ":" + Redacted
		}
		u = u[:i] + masked + u[i+at:]
	}
	return redactParams(u)
}
