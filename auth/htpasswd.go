package auth

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/http/httpguts"
)

// Bounds on the hashes an htpasswd file may hold. The low ends refuse
// hashes too weak to be worth the name; the high ends refuse parameters
// that would make every login a denial of service of the edge (bcrypt cost
// 17 is several seconds per check, argon2id's memory is taken per check).
const (
	maxBcryptCost     = 16
	bcryptMaxPassword = 72        // bcrypt ignores what follows: longer passwords are refused
	maxArgon2Memory   = 256 << 10 // KiB
	maxArgon2Time     = 16
	maxArgon2Threads  = 64
	minArgon2Salt     = 8
	minArgon2Key      = 16
	maxArgon2Key      = 64
	maxHtpasswdErrors = 20 // beyond this many bad lines, the count is enough
)

// passwordHash checks one password against one stored hash.
type passwordHash interface {
	verify(password []byte) bool
}

type bcryptHash []byte

func (h bcryptHash) verify(password []byte) bool {
	if len(password) > bcryptMaxPassword {
		// bcrypt only reads 72 bytes: accepting a longer password would
		// accept any suffix of it.
		_ = bcrypt.CompareHashAndPassword(h, password[:bcryptMaxPassword])
		return false
	}
	return bcrypt.CompareHashAndPassword(h, password) == nil
}

// argon2idHash is a PHC string: $argon2id$v=19$m=KiB,t=N,p=N$salt$key.
type argon2idHash struct {
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

func (h *argon2idHash) verify(password []byte) bool {
	got := argon2.IDKey(password, h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1
}

// htpasswdUser is one line of an htpasswd file.
type htpasswdUser struct {
	hash passwordHash
	p    *Principal // shared by every request of this user; read-only
}

// loadHtpasswd reads lines of user:hash; blank lines and lines starting
// with # are ignored. Every bad line is reported, by path:line and user,
// never with the hash.
func loadHtpasswd(path, authName string) (map[string]*htpasswdUser, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the htpasswd file: %w", err)
	}
	return htpasswdFrom(path, data, authName)
}

// htpasswdFrom reads htpasswd lines from data; path names them in errors.
func htpasswdFrom(path string, data []byte, authName string) (map[string]*htpasswdUser, []string, error) {
	users, order, errs := parseHtpasswd(path, data, authName)
	if len(errs) > 0 {
		if len(errs) > maxHtpasswdErrors {
			errs = append(errs[:maxHtpasswdErrors], fmt.Errorf("%s: %d more bad lines", path, len(errs)-maxHtpasswdErrors))
		}
		return nil, nil, errors.Join(errs...)
	}
	if len(users) == 0 {
		return nil, nil, fmt.Errorf("%s: no users (lines of user:hash)", path)
	}
	return users, order, nil
}

func parseHtpasswd(path string, data []byte, authName string) (map[string]*htpasswdUser, []string, []error) {
	users := map[string]*htpasswdUser{}
	lines := map[string]int{}
	var order []string
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		user, stored, ok := strings.Cut(line, ":")
		if !ok || user == "" || stored == "" {
			errs = append(errs, fmt.Errorf("%s:%d: want user:hash", path, n))
			continue
		}
		// The name goes into forward_user headers, logs and rate-limit keys.
		if !httpguts.ValidHeaderFieldValue(user) || strings.ContainsAny(user, " \t") {
			errs = append(errs, fmt.Errorf("%s:%d: user name %q: use printable characters without spaces", path, n, user))
			continue
		}
		h, err := parsePasswordHash(stored)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: user %q: %w", path, n, user, err))
			continue
		}
		if prev, dup := lines[user]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: user %q already defined on line %d", path, n, user, prev))
			continue
		}
		lines[user] = n
		users[user] = &htpasswdUser{hash: h, p: &Principal{Authenticator: authName, Subject: user}}
		order = append(order, user)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	return users, order, errs
}

// errWeakHash explains, without echoing the hash, why a format is refused.
func errWeakHash(kind string) error {
	return fmt.Errorf("%s hashes are refused: rehash with bcrypt (htpasswd -B -C 12) or argon2id", kind)
}

// parsePasswordHash accepts bcrypt and argon2id and names every other
// format htpasswd files are known to hold.
func parsePasswordHash(s string) (passwordHash, error) {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		cost, err := bcrypt.Cost([]byte(s))
		if err != nil || len(s) != 60 {
			return nil, errors.New("malformed bcrypt hash")
		}
		if cost > maxBcryptCost {
			return nil, fmt.Errorf("bcrypt cost %d: at most %d (each check of a higher cost takes seconds)", cost, maxBcryptCost)
		}
		return bcryptHash(s), nil
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	case strings.HasPrefix(s, "$argon2i$"), strings.HasPrefix(s, "$argon2d$"):
		return nil, errors.New("only the argon2id variant is accepted (argon2i and argon2d are not)")
	case strings.HasPrefix(s, "$apr1$"):
		return nil, errWeakHash("MD5 ($apr1$)")
	case strings.HasPrefix(s, "$1$"):
		return nil, errWeakHash("MD5-crypt ($1$)")
	case strings.HasPrefix(s, "$5$"), strings.HasPrefix(s, "$6$"):
		return nil, errWeakHash("SHA-crypt ($5$/$6$)")
	case strings.HasPrefix(s, "{SHA}"):
		return nil, errWeakHash("SHA1 ({SHA})")
	case strings.HasPrefix(s, "{SSHA}"):
		return nil, errWeakHash("salted SHA1 ({SSHA})")
	case strings.HasPrefix(s, "$"):
		return nil, errWeakHash("this scheme's")
	case len(s) == 13 && isCryptAlphabet(s):
		return nil, errWeakHash("DES crypt")
	}
	return nil, errors.New("not a bcrypt or argon2id hash (a plaintext password?): plaintext passwords are refused, store htpasswd -B output")
}

func isCryptAlphabet(s string) bool {
	for _, c := range []byte(s) {
		if c != '.' && c != '/' && (c < '0' || c > '9') && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

const argon2idFormat = "$argon2id$v=19$m=KiB,t=N,p=N$salt$key"

// parseArgon2id reads $argon2id$v=19$m=65536,t=3,p=4$salt$key, the PHC
// string format of the reference implementation (and of argon2 -e).
func parseArgon2id(s string) (*argon2idHash, error) {
	bad := errors.New("malformed argon2id hash: want " + argon2idFormat)
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[2] != "v=19" {
		return nil, bad
	}
	h := &argon2idHash{}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return nil, bad
	}
	for i, want := range []string{"m", "t", "p"} {
		k, v, ok := strings.Cut(params[i], "=")
		if !ok || k != want {
			return nil, bad
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 || v[0] == '0' {
			return nil, bad
		}
		switch want {
		case "m":
			if n > maxArgon2Memory {
				return nil, fmt.Errorf("argon2id memory %d KiB: at most %d (it is taken on every check)", n, maxArgon2Memory)
			}
			h.memory = uint32(n)
		case "t":
			if n > maxArgon2Time {
				return nil, fmt.Errorf("argon2id time %d: at most %d", n, maxArgon2Time)
			}
			h.time = uint32(n)
		case "p":
			if n > maxArgon2Threads {
				return nil, fmt.Errorf("argon2id parallelism %d: at most %d", n, maxArgon2Threads)
			}
			h.threads = uint8(n)
		}
	}
	if h.memory < 8*uint32(h.threads) {
		return nil, fmt.Errorf("argon2id memory %d KiB: at least 8 per lane", h.memory)
	}
	var err error
	if h.salt, err = base64.RawStdEncoding.Strict().DecodeString(parts[4]); err != nil || len(h.salt) < minArgon2Salt {
		return nil, fmt.Errorf("argon2id salt: want at least %d bytes of unpadded base64", minArgon2Salt)
	}
	if h.key, err = base64.RawStdEncoding.Strict().DecodeString(parts[5]); err != nil || len(h.key) < minArgon2Key || len(h.key) > maxArgon2Key {
		return nil, fmt.Errorf("argon2id key: want %d to %d bytes of unpadded base64", minArgon2Key, maxArgon2Key)
	}
	return h, nil
}
