package edgetls

import (
	"context"
	"crypto/tls"
	mathrand "math/rand/v2"
	"sync"
	"time"
)

// servedCert is the certificate served for a cache key, and the name it is for.
type servedCert struct {
	cert *tls.Certificate
	name string
}

// renewal schedules the served certificates' renewals. One goroutine (loop)
// renews them one after the other; it starts with the first served
// certificate and ends when the issuer closes.
type renewal struct {
	before time.Duration // Options.ACMERenewBefore; 0: a third of the lifetime
	retry  time.Duration // wait after a failed renewal

	mu      sync.Mutex
	due     map[string]renewDue // by cache key
	started bool
	kick    chan struct{} // cap 1: the schedule changed
}

type renewDue struct {
	name string
	at   time.Time
}

// defaultRenewRetry is the wait after a failed renewal: the certificate is
// still served (renewal starts with a third of its lifetime left), and a CA
// that is down is not asked more than a few times an hour per name.
const defaultRenewRetry = 10 * time.Minute

// current returns the certificate served for ck, or nil when there is none
// or it has expired: an expired certificate is never served; the handshake
// then waits for a new one like a first handshake.
func (iss *acmeIssuer) current(ck string) *tls.Certificate {
	v, ok := iss.served.Load(ck)
	if !ok {
		return nil
	}
	c := v.(*servedCert).cert
	if !iss.now().Before(c.Leaf.NotAfter) {
		return nil
	}
	return c
}

// serve makes cert the certificate served for ck and schedules its renewal.
// Handshakes in progress keep the certificate they read.
func (iss *acmeIssuer) serve(ck, name string, cert *tls.Certificate) {
	iss.served.Store(ck, &servedCert{cert: cert, name: name})
	iss.schedule(ck, name, iss.renewAt(cert.Leaf.NotBefore, cert.Leaf.NotAfter))
}

// renewAt is when a certificate valid from notBefore to notAfter is
// renewed: when renewal.before (default a third of its lifetime, at most
// 30 days) is left, plus up to a tenth of that (at most an hour) at random,
// so replicas sharing a cache rarely renew at the same moment.
func (iss *acmeIssuer) renewAt(notBefore, notAfter time.Time) time.Time {
	window := min(notAfter.Sub(notBefore)/3, 30*24*time.Hour)
	if iss.renewal.before > 0 {
		window = iss.renewal.before
	}
	var jitter time.Duration
	if j := min(window/10, time.Hour); j > 0 {
		jitter = mathrand.N(j)
	}
	return notAfter.Add(-window + jitter)
}

// schedule sets when ck is renewed next, starting the loop if needed.
func (iss *acmeIssuer) schedule(ck, name string, at time.Time) {
	r := &iss.renewal
	r.mu.Lock()
	if iss.ctx.Err() != nil { // closed: nothing renews any more
		r.mu.Unlock()
		return
	}
	r.due[ck] = renewDue{name: name, at: at}
	if !r.started {
		r.started = true
		iss.work.Add(1)
		go iss.renewLoop()
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// renewLoop renews certificates as they fall due, until close.
func (iss *acmeIssuer) renewLoop() {
	defer iss.work.Done()
	r := &iss.renewal
	for {
		var wake <-chan time.Time
		var t *time.Timer
		if at, ok := r.next(); ok {
			d := at.Sub(iss.now())
			if d <= 0 {
				iss.renewDue()
				continue
			}
			t = time.NewTimer(d)
			wake = t.C
		}
		select {
		case <-iss.ctx.Done():
		case <-r.kick:
		case <-wake:
		}
		if t != nil {
			t.Stop()
		}
		if iss.ctx.Err() != nil {
			return
		}
	}
}

// next is the earliest renewal time.
func (r *renewal) next() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var at time.Time
	for _, d := range r.due {
		if at.IsZero() || d.at.Before(at) {
			at = d.at
		}
	}
	return at, !at.IsZero()
}

// renewDue renews every certificate that is due, one at a time.
func (iss *acmeIssuer) renewDue() {
	r := &iss.renewal
	now := iss.now()
	r.mu.Lock()
	var due []string
	names := map[string]string{}
	for ck, d := range r.due {
		if !d.at.After(now) {
			due = append(due, ck)
			names[ck] = d.name
			delete(r.due, ck) // serve or a failure schedules it again
		}
	}
	r.mu.Unlock()
	for _, ck := range due {
		if iss.ctx.Err() != nil {
			return
		}
		iss.renew(ck, names[ck])
	}
}

// renew orders a new certificate for ck while the current one is still
// served. A failure is logged and counted, the current certificate stays in
// service until it expires, and the renewal is tried again after
// renewal.retry.
func (iss *acmeIssuer) renew(ck, name string) {
	ctx, cancel := context.WithTimeout(iss.ctx, orderRunTimeout)
	defer cancel()
	var current *tls.Certificate
	if v, ok := iss.served.Load(ck); ok {
		current = v.(*servedCert).cert
	}
	// Another replica sharing the cache, or this process before a restart,
	// may have renewed it already: adopt that certificate.
	if c, err := iss.cached(ctx, ck, name); err == nil && current != nil && c.Leaf.NotAfter.After(current.Leaf.NotAfter) &&
		iss.now().Before(iss.renewAt(c.Leaf.NotBefore, c.Leaf.NotAfter)) {
		iss.log.Info("tls: acme certificate renewed elsewhere; serving it", "server_name", name, "not_after", c.Leaf.NotAfter)
		iss.serve(ck, name, c)
		return
	}
	cert, err := iss.order(ctx, ck, name)
	iss.orders.Add(1)
	if err != nil {
		iss.count("error")
		if iss.ctx.Err() != nil {
			return // closed: the error is ours, not the CA's
		}
		attrs := []any{"server_name", name, "retry_in", iss.renewal.retry, "error", err}
		if current != nil {
			attrs = append(attrs, "serving_until", current.Leaf.NotAfter)
		}
		iss.log.Warn("tls: acme renewal failed; the current certificate is served until it expires", attrs...)
		iss.schedule(ck, name, iss.now().Add(iss.renewal.retry))
		return
	}
	iss.count("ok")
	iss.log.Info("tls: acme certificate renewed", "server_name", name, "not_after", cert.Leaf.NotAfter)
	iss.serve(ck, name, cert)
}
