// Package session keeps small server-side state in the client: a payload
// sealed with AES-256-GCM into one cookie, or into numbered chunks of it
// when it is too large for one. The payload carries its own creation and
// last-use times, so idle and absolute timeouts are enforced by whoever
// opens it, whatever expiry the browser was told.
//
// Keys come as a list: the first seals, every one opens, so a key is
// rotated by putting the new one first, and retired by removing it once
// every session it sealed has timed out.
//
// Nothing here takes the time itself: callers pass now.
package session

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// KeySize is the length of a key: AES-256.
const KeySize = 32

// ChunkSize is the longest cookie value written. Browsers keep at least
// 4096 bytes per cookie, name and attributes included (RFC 6265 6.1); 3800
// leaves room for those.
const ChunkSize = 3800

// DefaultMaxChunks bounds a session to about 15 KB of cookies: browsers
// send all of a site's cookies in one Cookie header, and proxies in front
// of the edge commonly refuse a header line over 16 KB.
const DefaultMaxChunks = 4

const (
	version   = 1
	keyIDSize = 4
	nonceSize = 12
	tagSize   = 16
	timesSize = 16 // created, last used: Unix nanoseconds
	// overhead is what sealing adds to a payload before base64.
	overhead = 1 + keyIDSize + nonceSize + timesSize + tagSize
)

// Errors of Open. Every one means "no valid session"; they are told apart
// for metrics and tests, never for the client.
var (
	ErrNoSession = errors.New("session: no cookie")
	ErrInvalid   = errors.New("session: cookie invalid") // tampered, truncated, reordered, sealed with an unknown key, or for another cookie name
	ErrIdle      = errors.New("session: idle timeout")
	ErrExpired   = errors.New("session: absolute timeout")
	ErrTooLarge  = errors.New("session: too large")
)

// Config describes one sealed cookie.
type Config struct {
	// Name is the cookie's name; chunks are Name.0, Name.1, ... It is also
	// bound into the seal, so a value sealed for one name does not open
	// under another.
	Name string
	// Keys: the first seals, all open. Each is KeySize bytes.
	Keys [][]byte
	// Idle is how long a session may go unused (0: no idle timeout).
	Idle time.Duration
	// Absolute is how long a session lives after it was created, used or
	// not (0: no absolute timeout).
	Absolute time.Duration
	// Path and Domain of the cookie (Path default "/").
	Path, Domain string
	// MaxChunks bounds the cookies one session may take (default
	// DefaultMaxChunks).
	MaxChunks int
	// Insecure drops the Secure attribute. Only for tests over plain
	// http: a browser would send a Secure cookie to http://localhost, a Go
	// cookie jar does not.
	Insecure bool
}

// Store seals and opens one kind of cookie. It is safe for concurrent use.
type Store struct {
	name      string
	aeads     []cipher.AEAD
	ids       [][keyIDSize]byte
	idle      time.Duration
	absolute  time.Duration
	path      string
	domain    string
	maxChunks int
	secure    bool
}

// Session is an opened cookie.
type Session struct {
	Created  time.Time // when the session was first sealed
	LastUsed time.Time // when it was last sealed
	Data     []byte
	// Chunks is how many cookies it came in (0 for a single, unnumbered
	// one): a writer that seals a smaller session removes the rest.
	Chunks int
	// ID is the seal's GCM tag: verified by Open, it names this sealed
	// value (each seal has a fresh nonce), so a caller may cache what it
	// derives from Data under it.
	ID string
}

// New checks c and returns its store.
func New(c Config) (*Store, error) {
	if c.Name == "" || !validName(c.Name) {
		return nil, fmt.Errorf("session: %q is not a cookie name", c.Name)
	}
	if len(c.Keys) == 0 {
		return nil, errors.New("session: no keys")
	}
	if c.Idle < 0 || c.Absolute < 0 {
		return nil, errors.New("session: negative timeout")
	}
	s := &Store{
		name:      c.Name,
		idle:      c.Idle,
		absolute:  c.Absolute,
		path:      c.Path,
		domain:    c.Domain,
		maxChunks: c.MaxChunks,
		secure:    !c.Insecure,
	}
	if s.path == "" {
		s.path = "/"
	}
	if s.maxChunks <= 0 {
		s.maxChunks = DefaultMaxChunks
	}
	for i, k := range c.Keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("session: key %d has %d bytes, needs %d", i, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("session: key %d: %w", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("session: key %d: %w", i, err)
		}
		s.aeads = append(s.aeads, aead)
		s.ids = append(s.ids, keyID(k))
	}
	return s, nil
}

// keyID names a key in a sealed value, so that opening tries the one key
// that sealed it instead of each in turn. A truncated hash of a 256-bit
// random key says nothing useful about it.
func keyID(k []byte) [keyIDSize]byte {
	h := sha256.Sum256(append([]byte("causeway session key id\x00"), k...))
	return [keyIDSize]byte(h[:keyIDSize])
}

// ParseKeys reads a list of keys: base64 (standard or URL alphabet, padded
// or not) of KeySize bytes each, separated by commas or white space, as
// `openssl rand -base64 32` prints them. The first is the sealing key.
func ParseKeys(list string) ([][]byte, error) {
	fields := strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' })
	if len(fields) == 0 {
		return nil, errors.New("no keys")
	}
	keys := make([][]byte, 0, len(fields))
	for i, f := range fields {
		k, err := decodeKey(f)
		if err != nil {
			// The key itself is never part of the error.
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.RawURLEncoding
	}
	k, err := enc.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64")
	}
	if len(k) != KeySize {
		return nil, fmt.Errorf("%d bytes, needs %d (openssl rand -base64 32)", len(k), KeySize)
	}
	return k, nil
}

// KeysFromEnv reads ParseKeys' list from the environment variable name.
func KeysFromEnv(name string) ([][]byte, error) {
	v, ok := os.LookupEnv(name)
	if !ok || strings.TrimSpace(v) == "" {
		return nil, fmt.Errorf("environment variable %s is unset or empty", name)
	}
	keys, err := ParseKeys(v)
	if err != nil {
		return nil, fmt.Errorf("environment variable %s: %w", name, err)
	}
	return keys, nil
}

// Name is the cookie's name.
func (s *Store) Name() string { return s.name }

// Idle and Absolute are the store's timeouts.
func (s *Store) Idle() time.Duration     { return s.idle }
func (s *Store) Absolute() time.Duration { return s.absolute }

// Seal encrypts data for a session created at created and used at now,
// and returns its cookies: one named Name, or Name.0 ... Name.N-1.
func (s *Store) Seal(data []byte, created, now time.Time) ([]*http.Cookie, error) {
	value, err := s.seal(data, created, now)
	if err != nil {
		return nil, err
	}
	maxAge := s.maxAge(created, now)
	if len(value) <= ChunkSize {
		return []*http.Cookie{s.cookie(s.name, value, maxAge)}, nil
	}
	n := (len(value) + ChunkSize - 1) / ChunkSize
	if n > s.maxChunks {
		return nil, fmt.Errorf("%w: %d bytes sealed take %d cookies, at most %d allowed", ErrTooLarge, len(value), n, s.maxChunks)
	}
	out := make([]*http.Cookie, 0, n)
	for i := range n {
		end := min((i+1)*ChunkSize, len(value))
		out = append(out, s.cookie(s.chunkName(i), value[i*ChunkSize:end], maxAge))
	}
	return out, nil
}

func (s *Store) seal(data []byte, created, now time.Time) (string, error) {
	if len(data) > s.maxChunks*ChunkSize { // a cheap bound before any work
		return "", fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	buf := make([]byte, 1+keyIDSize+nonceSize, overhead+len(data))
	buf[0] = version
	copy(buf[1:], s.ids[0][:])
	nonce := buf[1+keyIDSize:]
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("session: nonce: %w", err)
	}
	plain := make([]byte, timesSize, timesSize+len(data))
	binary.BigEndian.PutUint64(plain, uint64(created.UnixNano()))
	binary.BigEndian.PutUint64(plain[8:], uint64(now.UnixNano()))
	plain = append(plain, data...)
	// The header (version, key id) and the cookie's name are authenticated
	// too: a value moved to another cookie name does not open.
	sealed := s.aeads[0].Seal(buf, nonce, plain, s.additional(buf[:1+keyIDSize]))
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

func (s *Store) additional(header []byte) []byte {
	ad := make([]byte, 0, len(header)+len(s.name)+1)
	ad = append(ad, header...)
	ad = append(ad, s.name...)
	return append(ad, 0)
}

// maxAge is what the browser is told: until the absolute timeout, or a
// browser-session cookie without one. The real limits are inside the seal.
func (s *Store) maxAge(created, now time.Time) int {
	if s.absolute <= 0 {
		return 0
	}
	left := created.Add(s.absolute).Sub(now)
	if left < time.Second {
		return -1
	}
	return int(left / time.Second)
}

func (s *Store) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     s.path,
		Domain:   s.domain,
		MaxAge:   maxAge,
		Secure:   s.secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
}

func (s *Store) chunkName(i int) string { return s.name + "." + strconv.Itoa(i) }

// Open finds the session's cookies in r and opens them as of now.
func (s *Store) Open(r *http.Request, now time.Time) (*Session, error) {
	value, chunks, err := s.value(r)
	if err != nil {
		return nil, err
	}
	sess, err := s.OpenValue(value, now)
	if err != nil {
		return nil, err
	}
	sess.Chunks = chunks
	return sess, nil
}

// value gathers the sealed value: the cookie Name, else Name.0, Name.1, ...
// up to the first one missing. Two cookies of one name are refused: which
// one a browser sends first is not something to rely on.
func (s *Store) value(r *http.Request) (string, int, error) {
	var (
		single string
		chunks = make([]string, 0, 4)
		seen   = 0
	)
	prefix := s.name + "."
	for _, line := range r.Header["Cookie"] {
		for part := range strings.SplitSeq(line, ";") {
			name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				continue
			}
			switch {
			case name == s.name:
				if single != "" {
					return "", 0, ErrInvalid
				}
				single = val
			case strings.HasPrefix(name, prefix):
				i, err := strconv.Atoi(name[len(prefix):])
				if err != nil || i < 0 || i >= s.maxChunks || strconv.Itoa(i) != name[len(prefix):] {
					continue // not one of ours, or more than a session may take
				}
				for len(chunks) <= i {
					chunks = append(chunks, "")
				}
				if chunks[i] != "" {
					return "", 0, ErrInvalid
				}
				chunks[i] = val
				seen++
			}
		}
	}
	if single != "" {
		if seen > 0 {
			return "", 0, ErrInvalid // a leftover of another size: which is current is unknown
		}
		return single, 0, nil
	}
	if seen == 0 {
		return "", 0, ErrNoSession
	}
	n := 0
	for n < len(chunks) && chunks[n] != "" {
		n++
	}
	if n != seen {
		return "", 0, ErrInvalid // a gap: a chunk is missing
	}
	return strings.Join(chunks, ""), n, nil
}

// OpenValue opens one sealed value (the chunks already joined).
func (s *Store) OpenValue(value string, now time.Time) (*Session, error) {
	if value == "" {
		return nil, ErrNoSession
	}
	if len(value) > s.maxChunks*ChunkSize {
		return nil, ErrInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < overhead || raw[0] != version {
		return nil, ErrInvalid
	}
	header := raw[:1+keyIDSize]
	var aead cipher.AEAD
	for i, id := range s.ids {
		if [keyIDSize]byte(raw[1:1+keyIDSize]) == id {
			aead = s.aeads[i]
			break
		}
	}
	if aead == nil {
		return nil, ErrInvalid
	}
	nonce := raw[1+keyIDSize : 1+keyIDSize+nonceSize]
	ct := raw[1+keyIDSize+nonceSize:]
	plain, err := aead.Open(ct[:0], nonce, ct, s.additional(header))
	if err != nil {
		return nil, ErrInvalid
	}
	created := time.Unix(0, int64(binary.BigEndian.Uint64(plain)))
	used := time.Unix(0, int64(binary.BigEndian.Uint64(plain[8:])))
	if s.absolute > 0 && !now.Before(created.Add(s.absolute)) {
		return nil, ErrExpired
	}
	if s.idle > 0 && !now.Before(used.Add(s.idle)) {
		return nil, ErrIdle
	}
	return &Session{Created: created, LastUsed: used, Data: plain[timesSize:], ID: string(raw[len(raw)-tagSize:])}, nil
}

// Write sets the session's cookies on w, and expires the cookies of r's
// session that the new one does not overwrite (a shorter session leaves no
// stale chunk behind to make the next Open fail).
func (s *Store) Write(w http.ResponseWriter, r *http.Request, data []byte, created, now time.Time) error {
	cs, err := s.Seal(data, created, now)
	if err != nil {
		return err
	}
	written := map[string]bool{}
	for _, c := range cs {
		written[c.Name] = true
		http.SetCookie(w, c)
	}
	s.expire(w, r, written)
	return nil
}

// Clear expires every cookie of the session present in r (or the
// unchunked cookie when r is nil).
func (s *Store) Clear(w http.ResponseWriter, r *http.Request) {
	if r == nil {
		http.SetCookie(w, s.cookie(s.name, "", -1))
		return
	}
	s.expire(w, r, nil)
}

func (s *Store) expire(w http.ResponseWriter, r *http.Request, keep map[string]bool) {
	prefix := s.name + "."
	done := map[string]bool{}
	for _, c := range r.Cookies() {
		if c.Name != s.name && !strings.HasPrefix(c.Name, prefix) || keep[c.Name] || done[c.Name] {
			continue
		}
		done[c.Name] = true
		http.SetCookie(w, s.cookie(c.Name, "", -1))
	}
}

// Owns reports whether a cookie name is the session's: Name or Name.N. The
// edge strips these from what the upstream receives.
func (s *Store) Owns(cookie string) bool {
	if cookie == s.name {
		return true
	}
	rest, ok := strings.CutPrefix(cookie, s.name+".")
	if !ok || rest == "" {
		return false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validName is RFC 6265's cookie-name (an RFC 7230 token).
func validName(n string) bool {
	for _, c := range n {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, c) {
			return false
		}
	}
	return true
}
