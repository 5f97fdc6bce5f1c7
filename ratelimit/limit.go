// Package ratelimit counts requests against the routes file's rate limits:
// in memory for a single edge, or in Redis so that every edge shares one
// count. Both count with the same exact algorithm (see bucket), so moving a
// limit from memory to Redis changes where it is counted, not what it allows.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/causewayhq/causeway/routes"
)

// Limit allows Rate requests per Per on average, and Burst at once from an
// idle client (0 means Burst = Rate). Name identifies the limit in keys,
// metrics and errors.
type Limit struct {
	Name  string
	Rate  int
	Per   time.Duration
	Burst int
}

// LimitFromRoutes converts a routes-file limit.
func LimitFromRoutes(name string, l routes.RateLimit) Limit {
	return Limit{Name: name, Rate: l.Limit, Per: l.Per.D(), Burst: l.Burst}
}

// Decision is the outcome of one request against one limit.
type Decision struct {
	Allowed bool
	// Limit is the limit's Rate, for the RateLimit-Limit header.
	Limit int
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// RetryAfter is how long a refused client must wait before one request
	// would be allowed; 0 when Allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the client's full burst is available again.
	ResetAfter time.Duration
}

// Limiter decides whether the request identified by key may pass limit l.
// An error means the limiter could not decide (the store is unreachable);
// the Decision is then meaningless.
type Limiter interface {
	Allow(ctx context.Context, key string, l Limit) (Decision, error)
}

// maxCapacityMicros bounds Burst × Per (in µs) so that the Redis script,
// whose numbers are Lua doubles, computes on exact integers: 2^50 µs is
// about 35 years.
const maxCapacityMicros = 1 << 50

// bucket holds a limit in the integer units the algorithm counts in. It is
// the token-bucket form of GCRA: a client's allowance is a level between 0
// and cap that refills by rate units per microsecond, and a request costs
// per units. Measuring a request in µs of the window (per) and refill in
// requests (rate) keeps every quantity an integer, so "rate per window" is
// exact for any rate and window, with no rounding of the emission interval
// per/rate.
type bucket struct {
	rate  int64 // units refilled per µs (= Limit.Rate)
	per   int64 // units one request costs (= Limit.Per in µs)
	burst int64
	cap   int64 // burst × per: the level of an idle client
}

var errBadLimit = errors.New("invalid limit")

func (l Limit) bucket() (bucket, error) {
	burst := l.Burst
	if burst == 0 {
		burst = l.Rate
	}
	per := l.Per.Microseconds()
	switch {
	case l.Rate <= 0:
		return bucket{}, fmt.Errorf("ratelimit %q: %w: rate must be positive (found %d)", l.Name, errBadLimit, l.Rate)
	case per <= 0:
		return bucket{}, fmt.Errorf("ratelimit %q: %w: per must be at least 1µs (found %v)", l.Name, errBadLimit, l.Per)
	case burst < 0:
		return bucket{}, fmt.Errorf("ratelimit %q: %w: burst must not be negative (found %d)", l.Name, errBadLimit, burst)
	case int64(burst) > maxCapacityMicros/per:
		return bucket{}, fmt.Errorf("ratelimit %q: %w: burst × per is too large to count exactly (at most about 35 years)", l.Name, errBadLimit)
	}
	return bucket{rate: int64(l.Rate), per: per, burst: int64(burst), cap: int64(burst) * per}, nil
}

// refill returns the level at now of a bucket that was at level at last.
// Time running backwards (two edges' clocks) refills nothing.
func (b bucket) refill(level, last, now int64) int64 {
	elapsed := now - last
	if elapsed <= 0 {
		return level
	}
	if need := b.cap - level; elapsed >= ceilDiv(need, b.rate) {
		return b.cap
	}
	return level + elapsed*b.rate
}

// take applies one request to a bucket at level (already refilled to now)
// and returns the new level and the decision.
func (b bucket) take(level int64) (int64, Decision) {
	d := Decision{Limit: int(b.rate)}
	if level >= b.per {
		level -= b.per
		d.Allowed = true
		d.Remaining = int(level / b.per)
	} else {
		d.RetryAfter = micros(ceilDiv(b.per-level, b.rate))
	}
	d.ResetAfter = micros(ceilDiv(b.cap-level, b.rate))
	return level, d
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

func micros(n int64) time.Duration { return time.Duration(n) * time.Microsecond }

// params are the parameters signature spells, for comparing without
// building the string.
func (b bucket) params() [3]int64 { return [3]int64{b.rate, b.per, b.burst} }

// signature identifies a limit's parameters. State counted under other
// parameters (the limit was changed by a reload) is not reinterpreted in
// the new units: the client starts afresh with its full burst.
func (b bucket) signature() string {
	buf := make([]byte, 0, 48)
	buf = strconv.AppendInt(buf, b.rate, 10)
	buf = append(buf, '/')
	buf = strconv.AppendInt(buf, b.per, 10)
	buf = append(buf, '/')
	buf = strconv.AppendInt(buf, b.burst, 10)
	return string(buf)
}
