package mesh

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// waitLogEvery is how often a source without an identity says so.
const waitLogEvery = 5 * time.Second

// retryEvery caps the pause between attempts to reach the Workload API.
// go-spiffe's default backoff grows to 30 s, which would leave a process
// unready for up to half a minute after its agent came back; the socket is
// local, so trying every second costs nothing.
const retryEvery = time.Second

// workloadAPI is the SPIFFE Workload API side of a Source: the socket, the
// state of the stream, and whoever stops it.
type workloadAPI struct {
	socket    string
	connected func(bool)
	// want is the SVID's ID to pick among several; zero: the first.
	want spiffeid.ID
	// warnedMany is set once the choice of the first of several SVIDs
	// has been logged.
	warnedMany atomic.Bool

	mu        sync.Mutex
	problem   string // why there is no (fresh) identity, for /readyz and logs
	reachable bool   // the last attempt reached the agent
	known     bool   // reachable has been set once

	cancel context.CancelFunc
}

// NewWorkloadAPISource opens a source fed by the SPIFFE Workload API at
// socket ("unix:///run/spire/agent/api.sock"; empty: the
// SPIFFE_ENDPOINT_SOCKET environment variable), e.g. a SPIRE agent's. It
// returns at once: until the agent has delivered this workload's X.509-SVID
// the source has no identity (Ready says why, handshakes fail) and a line is
// logged every few seconds. The agent pushes every new SVID and bundle,
// federated trust domains' bundles included; each takes effect at the next
// handshake. When the agent becomes unreachable the current SVID stays in
// use until it expires, Connected(false) is reported, and the stream is
// reopened as soon as the agent answers.
func NewWorkloadAPISource(ctx context.Context, socket string, opts SourceOptions) (*Source, error) {
	if socket == "" {
		addr, ok := workloadapi.GetDefaultAddress()
		if !ok || addr == "" {
			return nil, fmt.Errorf("mesh source: no Workload API socket: set socket or %s", workloadapi.SocketEnv)
		}
		socket = addr
	}
	if err := workloadapi.ValidateAddress(socket); err != nil {
		return nil, fmt.Errorf("mesh source: Workload API socket %q: %w", socket, err)
	}
	s := &Source{origin: socket}
	if err := s.init(opts); err != nil {
		return nil, err
	}
	api := &workloadAPI{socket: socket, connected: opts.Connected, problem: "no answer from the agent yet"}
	if opts.SPIFFEID != "" {
		want, err := spiffeid.FromString(opts.SPIFFEID)
		if err != nil {
			return nil, fmt.Errorf("mesh source: spiffe_id %q: %w", opts.SPIFFEID, err)
		}
		if !s.td.IsZero() && !want.MemberOf(s.td) {
			return nil, fmt.Errorf("mesh source: spiffe_id %s is outside the trust domain %s", want, s.td)
		}
		api.want = want
	}
	s.api = api
	// The gRPC connection is made lazily: New does not wait for the agent,
	// and the watch below retries until it answers.
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(socket), workloadapi.WithBackoffStrategy(retryStrategy{}),
		workloadapi.WithLogger(quietLogger{}))
	if err != nil {
		return nil, fmt.Errorf("mesh source: Workload API client for %s: %w", socket, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	api.cancel = cancel
	s.log.Info("mesh: waiting for this workload's identity from the Workload API", "socket", socket)
	go func() {
		defer close(s.done)
		defer func() {
			if err := client.Close(); err != nil {
				s.closeErr = fmt.Errorf("mesh source: closing Workload API client: %w", err)
			}
		}()
		stopWait := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.logWhileWaiting(wctx, stopWait)
		}()
		// WatchX509Context reconnects by itself after every error and
		// returns only when wctx ends. go-spiffe's X509Source wraps this
		// same call, but blocks until the first SVID and swallows the
		// errors; a watcher of our own reports both.
		_ = client.WatchX509Context(wctx, (*apiWatcher)(s))
		close(stopWait)
		wg.Wait()
	}()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-wctx.Done():
		}
	}()
	return s, nil
}

// apiWatcher receives the Workload API stream for a Source.
type apiWatcher Source

// OnX509ContextUpdate takes a new SVID and bundle set from the agent.
func (w *apiWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	s := (*Source)(w)
	api := s.api
	svid, err := api.pick(s, c.SVIDs)
	var m *material
	switch {
	case err != nil:
	case svid == nil:
		err = errors.New("the agent sent no X.509-SVID")
	case !s.td.IsZero() && !svid.ID.MemberOf(s.td):
		err = fmt.Errorf("the agent's SVID is %s, outside the trust domain %s", svid.ID, s.td)
	default:
		m, err = s.materialOf(svid, c.Bundles)
	}
	api.setReachable(s, true)
	if err != nil {
		// A current SVID, if any, stays: refusing a bad update must not
		// take away an identity that still works.
		api.setProblem(err.Error())
		var missing errNoSVIDForID
		if errors.As(err, &missing) && s.cur.Load() == nil {
			// The agent delivers entries as it gets them: before this
			// workload's arrives it is waiting, not a fault (logWhileWaiting
			// says so every few seconds).
			return
		}
		s.log.Error("mesh: Workload API update refused, keeping the current identity", "socket", api.socket, "id", s.ID().String(), "error", err)
		return
	}
	api.setProblem("")
	s.reloadMu.Lock()
	s.publish(m)
	s.reloadMu.Unlock()
}

// pick chooses this workload's SVID among those the agent sent: the one
// named by spiffe_id, else the first (SPIRE's order is stable, but which
// entry comes first is not something to rely on: with several, a warning
// says to set spiffe_id).
func (api *workloadAPI) pick(s *Source, svids []*x509svid.SVID) (*x509svid.SVID, error) {
	if len(svids) == 0 {
		return nil, nil
	}
	if api.want.IsZero() {
		if len(svids) > 1 && api.warnedMany.CompareAndSwap(false, true) {
			s.log.Warn("mesh: the Workload API sent several SVIDs; using the first. Set spiffe_id to choose, or give each workload registration entries of its own",
				"socket", api.socket, "using", svids[0].ID.String(), "ids", svidIDs(svids))
		}
		return svids[0], nil
	}
	for _, svid := range svids {
		if svid.ID == api.want {
			return svid, nil
		}
	}
	return nil, errNoSVIDForID{want: api.want, sent: svidIDs(svids)}
}

// errNoSVIDForID: the agent's update holds SVIDs, none with spiffe_id.
type errNoSVIDForID struct {
	want spiffeid.ID
	sent []string
}

func (e errNoSVIDForID) Error() string {
	return fmt.Sprintf("the agent sent no SVID for spiffe_id %s (it sent %s): is there a registration entry with that ID matching this workload?",
		e.want, strings.Join(e.sent, ", "))
}

func svidIDs(svids []*x509svid.SVID) []string {
	ids := make([]string, len(svids))
	for i, svid := range svids {
		ids[i] = svid.ID.String()
	}
	return ids
}

// OnX509ContextWatchError is called for every failed attempt; the client
// retries after it.
func (w *apiWatcher) OnX509ContextWatchError(err error) {
	s := (*Source)(w)
	api := s.api
	switch status.Code(err) {
	case codes.Canceled:
		return
	case codes.PermissionDenied:
		// SPIRE's answer while it has no registration entry matching this
		// process (yet): the agent is there, the identity is not.
		api.setReachable(s, true)
		api.setProblem("the agent has no identity for this workload (no registration entry matches it yet): " + err.Error())
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	api.setProblem("the Workload API is unreachable: " + err.Error())
	api.setReachable(s, false)
}

// setReachable records whether the agent answers and logs the change.
func (api *workloadAPI) setReachable(s *Source, up bool) {
	api.mu.Lock()
	changed := !api.known || up != api.reachable
	api.reachable, api.known = up, true
	problem := api.problem
	api.mu.Unlock()
	if !changed {
		return
	}
	if api.connected != nil {
		api.connected(up)
	}
	if up {
		s.log.Info("mesh: Workload API reachable", "socket", api.socket)
		return
	}
	m := s.cur.Load()
	if m == nil {
		return // logWhileWaiting says it every few seconds
	}
	s.log.Warn("mesh: Workload API unreachable; the current SVID stays in use until it expires, reconnecting",
		"socket", api.socket, "id", m.id.String(), "not_after", m.notAfter, "error", problem)
}

func (api *workloadAPI) setProblem(p string) {
	api.mu.Lock()
	api.problem = p
	api.mu.Unlock()
}

func (api *workloadAPI) lastProblem() string {
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.problem == "" {
		return "no SVID yet"
	}
	return api.problem
}

// logWhileWaiting says every few seconds that there is no identity yet, and
// why, until the first SVID arrives.
func (s *Source) logWhileWaiting(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(waitLogEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
		if s.cur.Load() != nil {
			return
		}
		s.log.Warn("mesh: no workload identity yet; not ready and not serving mTLS until the Workload API delivers one",
			"socket", s.api.socket, "reason", s.api.lastProblem())
	}
}

// retryStrategy retries the Workload API at a steady pace (see retryEvery).
type retryStrategy struct{}

func (retryStrategy) NewBackoff() workloadapi.Backoff { return &steadyBackoff{} }

type steadyBackoff struct{ n int }

func (b *steadyBackoff) Next() time.Duration {
	b.n++
	if b.n == 1 {
		return retryEvery / 4 // a restarting agent is often back at once
	}
	return retryEvery
}

func (b *steadyBackoff) Reset() { b.n = 0 }

// quietLogger drops go-spiffe's own log lines: the watcher above reports
// every failure once, with its meaning, instead of at every retry.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Warnf(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
