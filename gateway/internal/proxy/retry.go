package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/causewayhq/causeway/gateway/internal/transport"
	"github.com/causewayhq/causeway/routes"
)

// retryBudgetBurst is how many retries the budget allows before any request
// has paid into it, so a quiet upstream still gets its first retries.
const RetryBudgetBurst = 10

// retryPolicy is the runtime form of routes.Retries.
type retryPolicy struct {
	attempts                      int
	onConnect, onReset, onTimeout bool
	onStatus                      [100]bool // 500..599
	Budget                        retryBudget
	perTry                        time.Duration
	backoff, maxBackoff           time.Duration
	nonIdempotent                 bool
	maxBody                       int64
}

func NewRetryPolicy(cfg *routes.Retries, now func() time.Time) *retryPolicy {
	p := &retryPolicy{
		attempts:      cfg.Attempts,
		perTry:        cfg.PerTryTimeout.D(),
		backoff:       cfg.Backoff.D(),
		maxBackoff:    cfg.MaxBackoff.D(),
		nonIdempotent: cfg.NonIdempotent,
		maxBody:       int64(cfg.MaxBody),
	}
	for _, on := range cfg.On {
		switch on {
		case "connect_failure":
			p.onConnect = true
		case "reset":
			p.onReset = true
		case "timeout":
			p.onTimeout = true
		default:
			if n, err := strconv.Atoi(on); err == nil && n >= 500 && n <= 599 {
				p.onStatus[n-500] = true
			}
		}
	}
	p.Budget.percent = int64(cfg.BudgetPercent)
	p.Budget.Tokens.Store(RetryBudgetBurst * 100)
	p.Budget.now = now
	p.Budget.last.Store(now().UnixNano())
	return p
}

// retryBudget caps retries at a share of requests, so that when every
// endpoint fails, retries add at most budget_percent to the load instead of
// multiplying it by attempts. Every request pays percent tokens in; a retry
// takes 100 out; the balance is capped so a long quiet spell does not save
// up a retry storm.
//
// Time also pays in, retryBudgetMinPerSecond retries a second, so that an
// upstream with little traffic still gets its retries (Linkerd's
// minRetriesPerSecond).
type retryBudget struct {
	percent int64
	Tokens  atomic.Int64
	now     func() time.Time
	last    atomic.Int64 // when time last paid in (Unix nanoseconds)
}

const retryBudgetMinPerSecond = 10

func (b *retryBudget) Deposit() { b.add(b.percent) }

func (b *retryBudget) add(n int64) {
	if t := b.Tokens.Add(n); t > RetryBudgetBurst*100 {
		b.Tokens.CompareAndSwap(t, RetryBudgetBurst*100)
	}
}

// refill pays in what the time since the last refill is worth.
func (b *retryBudget) refill() {
	if b.now == nil {
		return
	}
	const step = int64(time.Second / retryBudgetMinPerSecond)
	now, last := b.now().UnixNano(), b.last.Load()
	if now-last < step || !b.last.CompareAndSwap(last, now) {
		return
	}
	b.add(min((now-last)/step, RetryBudgetBurst) * 100)
}

func (b *retryBudget) Withdraw() bool {
	b.refill()
	for {
		t := b.Tokens.Load()
		if t < 100 {
			return false
		}
		if b.Tokens.CompareAndSwap(t, t-100) {
			return true
		}
	}
}

// retriesOn says whether an attempt that ended with kind (and resp, for
// statuses) is one the policy retries.
func (p *retryPolicy) retriesOn(kind FailKind, resp *http.Response) bool {
	switch kind {
	case FailConnect:
		return p.onConnect
	case FailReset:
		return p.onReset
	case FailTimeout:
		return p.onTimeout
	case failStatus:
		return resp != nil && resp.StatusCode >= 500 && resp.StatusCode <= 599 && p.onStatus[resp.StatusCode-500]
	}
	return false
}

// Wait sleeps the back-off before retry n (0-based) with full jitter, or
// returns false when the client leaves first.
func (p *retryPolicy) Wait(ctx context.Context, n int) bool {
	// A client that already left is never retried for, whichever of the
	// timer and the context a select would pick when both are ready.
	if ctx.Err() != nil {
		return false
	}
	d := p.backoff << min(n, 16)
	if d > p.maxBackoff || d <= 0 {
		d = p.maxBackoff
	}
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(rand.N(d) + 1)
	defer t.Stop()
	select {
	case <-t.C:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// idempotent methods may be sent twice without changing the outcome.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// FailKind is how an attempt ended.
type FailKind uint8

const (
	attemptOK       FailKind = iota
	FailConnect              // no connection was made: the request was never sent
	FailReset                // the connection broke before response headers
	FailTimeout              // no response headers in time
	failStatus               // a 5xx response
	FailOther                // a malformed response and the like
	AttemptCanceled          // the client left: says nothing about the endpoint
	failNoEndpoint           // no endpoint was available: nothing was sent
	FailRequest              // the request itself cannot be sent as it stands: the client's fault
)

// requestFault is an error that says the request itself cannot be sent
// (the HTTP/1.1 writer refusing a forbidden trailer field the client
// sent, say) before any of it was written. It is the client's fault: were
// it the endpoint's, a client could eject healthy endpoints by sending
// such requests.
type requestFault interface {
	error
	RequestFault() bool
}

// Classify is the one reading of an upstream error: the retry policy and
// the outlier detector act on its kind, and the client's status comes from
// it (failKind.status).
func Classify(ctx context.Context, err error) FailKind {
	if ctx.Err() != nil {
		return AttemptCanceled
	}
	if errors.Is(err, errNoEndpoint) {
		return failNoEndpoint
	}
	if rf, ok := errors.AsType[requestFault](err); ok && rf.RequestFault() {
		return FailRequest
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" || errors.Is(err, syscall.ECONNREFUSED) {
		return FailConnect
	}
	var nerr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &nerr) && nerr.Timeout() {
		return FailTimeout
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return FailReset
	}
	// http.Transport closes a connection whose body write hit a reset and
	// may then report the next write's "use of closed network connection"
	// instead of the reset itself (a POST whose body is larger than the
	// socket buffers, to an upstream that resets half way through it).
	// Nothing else closes a connection under a running attempt: the
	// client leaving and deadlines are caught above.
	if errors.Is(err, net.ErrClosed) {
		return FailReset
	}
	return FailOther
}

// Status is the answer the client gets for a request whose last attempt
// failed this way. A timeout is any deadline or net.Error timeout: the
// transport's response-header timeout, per_try_timeout, a dial that timed
// out.
func (k FailKind) Status() (int, string) {
	switch k {
	case failNoEndpoint:
		return http.StatusServiceUnavailable, "no healthy upstream endpoint"
	case FailTimeout:
		return http.StatusGatewayTimeout, "upstream timed out"
	case AttemptCanceled:
		return StatusClientClosed, "client closed the request"
	case FailRequest:
		return http.StatusBadRequest, "the request cannot be forwarded (a field HTTP/1.1 does not allow where it was sent)"
	default:
		return http.StatusBadGateway, "upstream unavailable or sent an invalid response"
	}
}

// StatusClientClosed is nginx's status for a client that closed the
// connection before the response: logged, never sent.
const StatusClientClosed = 499

// errPerTryTimeout ends an attempt that waited per_try_timeout for headers;
// it is a deadline, so the client sees 504 when no retry is left.
var ErrPerTryTimeout = fmt.Errorf("per-try timeout: %w", context.DeadlineExceeded)

// upstreamTransport is an upstream's RoundTripper as the forwarder sees it:
// one attempt on the endpoint the forwarder chose, then retries on other
// endpoints while the policy, the budget and the client allow, feeding
// every outcome to the outlier detector and the latency estimates. A retry
// only ever happens before anything of the response reached the client.
type upstreamTransport struct {
	up   *Upstream
	base http.RoundTripper
}

var _ http.RoundTripper = (*upstreamTransport)(nil)

func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	tr := t.up.hooks.track(ctx)
	bal := t.up.Bal
	ep, ok := bal.Pick(req, nil)
	if !ok {
		return nil, errNoEndpoint
	}
	req.URL.Host = ep.Addr
	tr.Attempt(ep, time.Now())
	p := t.up.retry
	retryable := p != nil && p.attempts > 0 && (p.nonIdempotent || idempotent(req.Method))
	if p != nil {
		p.Budget.Deposit()
	}
	if hasBody(req) && req.GetBody == nil {
		var limit int64
		if retryable {
			limit = p.maxBody
		}
		if mr := t.up.Mirror; mr != nil && mr.maxBody > limit {
			limit = mr.maxBody
		}
		// Only a small body of known length is kept to be sent again; a
		// large upload streams through once.
		if req.ContentLength > 0 && req.ContentLength <= limit {
			if err := replayable(req); err != nil {
				return nil, err
			}
		}
		if req.GetBody == nil || req.ContentLength > p.bodyLimit() {
			retryable = false
		}
	}
	if mr := t.up.Mirror; mr != nil {
		mr.send(req)
	}
	for n := 0; ; n++ {
		resp, kind, d, err := t.try(req, ep, tr)
		if !retryable || n >= p.attempts || !p.retriesOn(kind, resp) {
			return resp, err
		}
		next, ok := bal.Pick(req, ep)
		if !ok || !p.Budget.Withdraw() {
			return resp, err
		}
		var status int
		if resp != nil {
			status = resp.StatusCode
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		} else {
			status, _ = kind.Status()
		}
		t.up.hooks.observe(t.up.Name, ep.Label, status, d)
		if !p.Wait(ctx, n) {
			return nil, ctx.Err()
		}
		nreq := req.Clone(ctx)
		if req.GetBody != nil {
			if nreq.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
		nreq.URL.Host = next.Addr
		req, ep = nreq, next
		tr.Attempt(next, time.Now())
	}
}

func (p *retryPolicy) bodyLimit() int64 {
	if p == nil {
		return 0
	}
	return p.maxBody
}

// try makes one attempt on ep.
func (t *upstreamTransport) try(req *http.Request, ep *Endpoint, tr Tracker) (*http.Response, FailKind, time.Duration, error) {
	parent := req.Context()
	var cancel context.CancelCauseFunc
	var timer *time.Timer
	if p := t.up.retry; p != nil && p.perTry > 0 {
		var ctx context.Context
		ctx, cancel = context.WithCancelCause(parent)
		timer = time.AfterFunc(p.perTry, func() { cancel(ErrPerTryTimeout) })
		req = req.WithContext(ctx)
	}
	ep.Inflight.Add(1)
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	d := time.Since(start)
	if timer != nil {
		timer.Stop()
	}
	kind := attemptOK
	switch {
	case err != nil:
		ep.Inflight.Add(-1)
		if cancel != nil {
			if errors.Is(context.Cause(req.Context()), ErrPerTryTimeout) && parent.Err() == nil {
				err = ErrPerTryTimeout
			}
			cancel(nil)
		}
		kind = Classify(parent, err)
		if tr.BodyFailed() {
			// The client's body broke, not the endpoint: no ejection, no retry.
			kind = AttemptCanceled
		}
	case resp.StatusCode == http.StatusSwitchingProtocols:
		// An upgraded connection (WebSocket) lives as long as the client's
		// request; it is not a request in flight for the balancers.
		ep.Inflight.Add(-1)
	default:
		if resp.StatusCode >= 500 {
			kind = failStatus
		}
		ep.Latency.Observe(start.UnixNano()+int64(d), d)
		// Without a per-try context to release, the body of the own
		// HTTP/1.1 client ends the attempt itself: no wrapper to
		// allocate per request.
		if cancel != nil || !transport.OnBodyClose(resp, ep) {
			resp.Body = &attemptBody{ReadCloser: resp.Body, ep: ep, cancel: cancel}
		}
	}
	// Nor is a request that cannot be sent the endpoint's fault: no
	// ejection (and retriesOn never retries it).
	if kind != AttemptCanceled && kind != FailRequest {
		t.up.Health.observe(ep, kind != attemptOK)
	}
	return resp, kind, d, err
}

// attemptBody ends an attempt when the forwarder closes the response body:
// the endpoint's in-flight count drops and the per-try context is released.
// A body of transport.H1's without a per-try context does it itself
// (transport.OnBodyClose, Endpoint.BodyEnded).
type attemptBody struct {
	io.ReadCloser
	ep     *Endpoint
	cancel context.CancelCauseFunc
	once   sync.Once
}

func (b *attemptBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		b.ep.Inflight.Add(-1)
		if b.cancel != nil {
			b.cancel(nil)
		}
	})
	return err
}

// BodyEnded ends an attempt on e whose response body was closed
// (transport.OnBodyClose): as attemptBody's Close without a per-try context.
func (e *Endpoint) BodyEnded() { e.Inflight.Add(-1) }

var _ transport.BodyEnder = (*Endpoint)(nil)

func hasBody(r *http.Request) bool { return r.Body != nil && r.Body != http.NoBody }

// replayable reads r's body (ContentLength bytes, already bounded by the
// caller) so it can be sent again.
func replayable(r *http.Request) error {
	buf := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, buf); err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	// On to the body's end, which is where an HTTP/2 client's trailers
	// arrive: the forwarder fills the request's Trailer then, and every
	// attempt and the mirror's copy send them.
	var one [1]byte
	if _, err := io.ReadFull(r.Body, one[:]); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("longer than its Content-Length")
		}
		return fmt.Errorf("reading the request body: %w", err)
	}
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}
