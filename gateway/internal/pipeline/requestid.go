package pipeline

import (
	"crypto/rand"
)

// requestID returns the client's X-Request-Id when it is a sane token, or a
// new random UUID (version 4). A client-chosen id is kept so that a request
// can be followed across systems; a hostile one (long, odd bytes) is not.
func RequestID(client string) string {
	if ValidRequestID(client) {
		return client
	}
	return NewUUID()
}

// ValidRequestID reports whether RequestID keeps a client's id s.
func ValidRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' && c != '.' && c != ':' {
			return false
		}
	}
	return true
}

func NewUUID() string {
	var b [UUIDLen]byte
	PutUUID(&b)
	return string(b[:])
}

// UUIDLen is the length of NewUUID's ids.
const UUIDLen = 36

// PutUUID writes a new id (NewUUID's) into b, for a caller that makes it
// one string with others.
func PutUUID(b *[UUIDLen]byte) {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails on supported platforms
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
}
