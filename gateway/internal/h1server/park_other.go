//go:build !linux

package h1server

import (
	"errors"
	"time"
)

// parker is Linux-only (epoll): elsewhere an idle connection keeps its
// goroutine, waiting in the runtime's poller.
type parker struct{}

// wakeToken is unused here; parkToken stays zero.
const wakeToken = 0

type deadlineHeap []*conn

func newParker(func() time.Time) (*parker, error) {
	return nil, errors.New("h1server: parking idle connections needs Linux")
}

func (*parker) park(*conn) bool { return false }

func (*parker) close() {}
