package conformance

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/internal/testnetns"
)

// gatewayEdges deploys Causeway the way docs/kubernetes.md says to give
// each Gateway its own address: one edge per Gateway of the class, its
// routes file naming that Gateway in providers.kubernetes.gateways and
// its own address in status_address, listening on that address only. It
// plays the part of the operator (or the Deployment per Gateway) that
// a cluster would have: it lists the class's Gateways, starts an edge for
// each new one, and stops the edge of each Gateway deleted.
//
// An edge for firstGateway runs from the start, before any Gateway
// exists: any edge writes the GatewayClass's status (the suite reads the
// features to test there before it creates a Gateway).
type gatewayEdges struct {
	c          client.Client
	class      string
	kubeconfig string
	dir        string
	log        io.Writer

	mu     sync.Mutex
	addrs  map[string]string // "ns/name" -> its edge's address, kept for a Gateway made again
	edges  map[string]*runningEdge
	errLog []error
}

type runningEdge struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// firstGateway is the suite's first base Gateway.
const firstGateway = "gateway-conformance-infra/same-namespace"

func newGatewayEdges(c client.Client, class, kubeconfig, dir string, log io.Writer) *gatewayEdges {
	return &gatewayEdges{c: c, class: class, kubeconfig: kubeconfig, dir: dir, log: log,
		addrs: map[string]string{}, edges: map[string]*runningEdge{}}
}

// run reconciles until ctx ends, then stops every edge.
func (g *gatewayEdges) run(ctx context.Context) {
	defer g.stopAll()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		g.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (g *gatewayEdges) reconcile(ctx context.Context) {
	var list gatewayv1.GatewayList
	if err := g.c.List(ctx, &list); err != nil {
		return // the API server away for a moment: next tick
	}
	want := []string{firstGateway}
	for _, gw := range list.Items {
		if string(gw.Spec.GatewayClassName) == g.class && gw.DeletionTimestamp == nil {
			if k := gw.Namespace + "/" + gw.Name; !slices.Contains(want, k) {
				want = append(want, k)
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, e := range g.edges {
		if !slices.Contains(want, k) {
			e.stop()
			delete(g.edges, k)
		}
	}
	for _, k := range want {
		if _, ok := g.edges[k]; ok {
			continue
		}
		e, err := g.start(ctx, k)
		if err != nil {
			g.errLog = append(g.errLog, fmt.Errorf("edge for Gateway %s: %w", k, err))
			continue
		}
		g.edges[k] = e
	}
}

// start runs an edge for Gateway key on an address of its own: the
// Gateway's Nth, from 10.244.1.1 on, local to the test's network
// namespace.
func (g *gatewayEdges) start(ctx context.Context, key string) (*runningEdge, error) {
	addr, ok := g.addrs[key]
	if !ok {
		addr = testnetns.Addr(256 + len(g.addrs) + 1)
		g.addrs[key] = addr
	}
	file := filepath.Join(g.dir, fmt.Sprintf("edge-%s.yaml", addr))
	if err := os.WriteFile(file, []byte(fmt.Sprintf(`version: 1
listen: {http: "%[1]s:80", https: "%[1]s:443", admin: "127.0.0.1:0"}
tls: {redirect_http: false}
access_log: {output: "off"}
providers:
  kubernetes: {kubeconfig: %[2]q, status_address: {ip: %[1]q}, gateways: [%[3]q]}
`, addr, g.kubeconfig, key)), 0o600); err != nil {
		return nil, err
	}
	ectx, cancel := context.WithCancel(ctx)
	e, err := gateway.NewEdge(ectx, gateway.EdgeOptions{ConfigPath: file,
		Logger: slog.New(slog.NewJSONHandler(g.log, nil)).With("gateway", key)})
	if err != nil {
		cancel()
		return nil, err
	}
	if err := e.Listen(); err != nil {
		e.Close()
		cancel()
		return nil, err
	}
	r := &runningEdge{addr: addr, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- e.Serve(ectx) }()
	return r, nil
}

// stop ends the edge and waits until it has let go of its address.
func (e *runningEdge) stop() {
	e.cancel()
	<-e.done
}

func (g *gatewayEdges) stopAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, e := range g.edges {
		e.stop()
		delete(g.edges, k)
	}
}

// errors are the edges that could not be started.
func (g *gatewayEdges) errors() []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.errLog)
}
