package testutil

import "sync"

// StallBody is a request body that gives its part, then stalls as a
// client that stops sending does: the next read closes Blocked and waits
// until the test closes Stall, then ends with what Cut returns (bytes
// handed over with the error, in whichever order the test forces). Any
// read after that returns Again, as a connection past its deadline does.
type StallBody struct {
	Blocked chan struct{}
	Stall   chan struct{}
	Cut     func() ([]byte, error)
	part    []byte
	again   error
	once    sync.Once
}

// NewStallBody is a StallBody that gives part first; Cut is the caller's
// to set before the body is read.
func NewStallBody(part []byte, again error) *StallBody {
	return &StallBody{Blocked: make(chan struct{}), Stall: make(chan struct{}), part: part, again: again}
}

func (b *StallBody) Read(p []byte) (int, error) {
	if len(b.part) > 0 {
		n := copy(p, b.part)
		b.part = b.part[n:]
		return n, nil
	}
	first := false
	b.once.Do(func() { first = true })
	if !first {
		return 0, b.again
	}
	close(b.Blocked)
	<-b.Stall
	last, err := b.Cut()
	return copy(p, last), err
}

// Close does nothing: the test ends the body through Stall and Cut.
func (b *StallBody) Close() error { return nil }
