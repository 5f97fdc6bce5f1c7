package plugins

import "fmt"

// Phase is where in a route's chain an instance runs. A route runs, in
// order: its BeforeAuth instances, authentication, its rate limits, its
// AfterAuth instances, then the upstream.
type Phase int

const (
	// AfterAuth is the default: the request is authenticated (the
	// principal is on the context) and counted against its rate limits.
	AfterAuth Phase = iota
	// BeforeAuth runs before authentication and rate limits, for answers
	// that must not need credentials nor cost a rate-limit token: a CORS
	// preflight, which browsers send without credentials. No principal is
	// known yet. Whatever such an instance passes on still goes through
	// authentication, so it must not forward anything it answers itself.
	BeforeAuth
)

func (p Phase) String() string {
	switch p {
	case AfterAuth:
		return "after_auth"
	case BeforeAuth:
		return "before_auth"
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// Phaser is implemented by an Instance that declares its phase; an
// Instance that does not runs AfterAuth. The phase must not change over
// the instance's life.
type Phaser interface {
	Phase() Phase
}

// PhaseOf is the phase inst runs in.
func PhaseOf(inst Instance) Phase {
	if p, ok := inst.(Phaser); ok {
		return p.Phase()
	}
	return AfterAuth
}
