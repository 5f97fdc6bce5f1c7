package routes

import (
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// envValues are the values a file took from ${VAR} references: each
// expanded value whole and each variable's value within it, with the key
// path it stands at. Secrets are kept in the environment so that the file
// need not hold them; an error that quotes such a value (a refused
// endpoint, URL or name) goes to the log, /config's last_reload and
// `causeway validate`, so the value is shown as REDACTED there, wherever
// the error is found: in decoding, validation, a plugin's check or while
// the configuration is built.
//
// Written only while the file is decoded; read afterwards, also from
// several goroutines.
type envValues struct {
	vals []envValue
}

type envValue struct {
	path, text string
}

// minMaskedElsewhere is the shortest value masked in an error about
// another key: a message about one key may quote another's value (a name
// it refers to, an address it clashes with), but a short value ("1",
// "on") would mask ordinary words of every message.
const minMaskedElsewhere = 4

// add records the value v expanded at path and the variables' values in it.
func (ev *envValues) add(path, v string, parts []string) {
	if ev == nil {
		return
	}
	seen := map[string]bool{"": true}
	for _, p := range append([]string{v}, parts...) {
		// An error may quote what was made of the value: the host of a
		// URL or of host:port, its user information.
		for _, t := range append([]string{p}, valueParts(p)...) {
			if !seen[t] {
				seen[t] = true
				ev.vals = append(ev.vals, envValue{path, t})
			}
		}
	}
	// Longest first: a value holding another is masked whole.
	sort.SliceStable(ev.vals, func(i, j int) bool { return len(ev.vals[i].text) > len(ev.vals[j].text) })
}

// valueParts are the parts of v an error may quote alone: a URL's
// host, host name, user information and password, or host:port's host.
func valueParts(v string) []string {
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil {
			return nil
		}
		parts := []string{u.Host, u.Hostname()}
		if u.User != nil {
			parts = append(parts, u.User.Username())
			if pw, ok := u.User.Password(); ok {
				parts = append(parts, pw)
			}
		}
		return parts
	}
	if host, _, err := net.SplitHostPort(v); err == nil {
		return []string{host}
	}
	return nil
}

// mask replaces in msg, an error at path, each value that came from the
// environment: at its own key (or one above or below it) whatever its
// length, elsewhere from minMaskedElsewhere bytes. A value is masked as
// it is and as %q writes it, and only where it is not part of a longer
// word.
func (ev *envValues) mask(path, msg string) string {
	if ev == nil {
		return msg
	}
	for _, v := range ev.vals {
		if len(v.text) < minMaskedElsewhere && !related(path, v.path) {
			continue
		}
		msg = replaceWord(msg, v.text)
		if q := strconv.Quote(v.text); q[1:len(q)-1] != v.text {
			msg = replaceWord(msg, q[1:len(q)-1])
		}
	}
	return msg
}

// related reports whether key paths a and b are the same, or one holds the
// other ("" holds every path: an error not about one key).
func related(a, b string) bool {
	return a == b || under(a, b) || under(b, a)
}

// replaceWord replaces each occurrence of s in msg with Redacted, except
// where s continues a word of msg on either side.
func replaceWord(msg, s string) string {
	if s == "" || !strings.Contains(msg, s) {
		return msg
	}
	var b strings.Builder
	for {
		i := strings.Index(msg, s)
		if i < 0 {
			break
		}
		end := i + len(s)
		inWord := (i > 0 && wordByte(msg[i-1]) && wordByte(s[0])) ||
			(end < len(msg) && wordByte(msg[end]) && wordByte(s[len(s)-1]))
		if inWord {
			b.WriteString(msg[:i+1])
			msg = msg[i+1:]
			continue
		}
		b.WriteString(msg[:i])
		b.WriteString(Redacted)
		msg = msg[end:]
	}
	b.WriteString(msg)
	return b.String()
}

func wordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c >= 0x80
}

func (ev *envValues) maskError(e *Error) {
	if ev == nil || e == nil {
		return
	}
	e.Msg = ev.mask(e.Path, e.Msg)
}

func (ev *envValues) maskErrors(es Errors) {
	for _, e := range es {
		ev.maskError(e)
	}
}

// maskErr is err with every value from the environment masked. Errors
// and *Error are copied with their messages masked; any other error is
// masked as text and still unwraps to err.
func (ev *envValues) maskErr(err error) error {
	if ev == nil || len(ev.vals) == 0 || err == nil {
		return err
	}
	switch e := err.(type) { //nolint:errorlint // only these very types are copied with their positions; a wrapped one is masked as text below
	case *Error:
		cp := *e
		ev.maskError(&cp)
		return &cp
	case Errors:
		cp := make(Errors, len(e))
		for i, x := range e {
			c := *x
			ev.maskError(&c)
			cp[i] = &c
		}
		return cp
	}
	msg := ev.mask("", err.Error())
	if msg == err.Error() {
		return err
	}
	return &maskedError{msg: msg, err: err}
}

// maskedError is an error whose text had values from the environment
// masked.
type maskedError struct {
	msg string
	err error
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }

var _ interface{ Unwrap() error } = (*maskedError)(nil)

// RedactEnv returns err, found while building or using f, with every value
// f took from a ${VAR} reference shown as REDACTED. Errors keep their
// file:line:col and key path. ParseWith masks its own errors; this is for
// the errors found after it (a Redis that cannot be reached, a plugin or
// provider that refuses its part).
func (f *File) RedactEnv(err error) error {
	if f == nil {
		return err
	}
	return f.env.maskErr(err)
}

// RedactEnv is File.RedactEnv for a sidecar file.
func (s *Sidecar) RedactEnv(err error) error {
	if s == nil {
		return err
	}
	return s.env.maskErr(err)
}
