// Command quickstart runs a demo service and a ledger service, each with its
// sidecar, and a Causeway edge in one process,
// with embedded defaults (no Redis, no files to prepare), and prints curl
// commands to try:
//
//	go run ./examples/quickstart
//
// The edge reaches the demo through its sidecar over mTLS, and the demo
// calls the ledger through both sidecars; the partner the edge authenticated
// arrives at the ledger in a caller token. The identities
// come from a throw-away built-in CA, or with -identity spire from a SPIRE
// server and agents it starts on loopback (spire-server and spire-agent from
// PATH or .tools/bin, where `make deps` builds them):
//
//	go run ./examples/quickstart -identity spire
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/causewayhq/causeway/gateway"
	"github.com/causewayhq/causeway/internal/spirelocal"
	"github.com/causewayhq/causeway/mesh"
)

const routesTemplate = `version: 1
listen:
  http: "%s"
  admin: "%s"
access_log: {output: "%s"}
authenticators:
  partners:
    api_key:
      header: X-API-Key
      keys_file: "%s"
      forward_name: X-Partner
rate_limits:
  # 5 a minute: a token comes back every 12 s, so the seven curls of the
  # tour show 5 x 200 then 429 even on a slow or busy machine.
  per-ip: {key: client_ip, limit: 5, per: 1m}
mesh:
  trust_domain: quickstart.local
%s
  # A signed token of the authenticated caller goes with every request
  # into the mesh (docs/mesh.md).
  caller_token: {}
upstreams:
  demo:
    endpoints: ["%s"]
    timeout: 5s
  demo-mesh:
    endpoints: ["%s"]
    mesh_identity: "%s"
routes:
  - name: public
    match: {path_prefix: /public/}
    strip_prefix: true
    upstream: demo
  - name: partners
    match: {path_prefix: /partners/}
    auth: partners
    upstream: demo
  - name: limited
    match: {path: /limited}
    rate_limit: per-ip
    upstream: demo
  - name: mesh-partners
    match: {path_prefix: /mesh/partners/}
    strip_prefix: true
    auth: partners
    upstream: demo-mesh
  - name: mesh
    match: {path_prefix: /mesh/}
    strip_prefix: true
    upstream: demo-mesh
`

// sidecarTemplate puts a service behind a sidecar that lets one identity
// in, believes the edge's caller tokens, and hands the service the partner
// name the edge forwards.
const sidecarTemplate = `version: 1
identity: {%s}
access_log: {output: "off"}
admin: "127.0.0.1:0"
inbound:
  listen: "127.0.0.1:0"
  forward_to: "%s"
  allow: ["%s"]
  callers: {issuers: ["` + edgeID + `"], headers: [X-Partner]}
`

// outboundTemplate lets the demo call the ledger through its sidecar.
const outboundTemplate = `outbound:
  listen: "127.0.0.1:0"
  services:
    ledger: {endpoints: ["%s"], identity: "%s"}
`

const (
	trustDomain = "quickstart.local"
	edgeID      = "spiffe://quickstart.local/ns/edge/sa/gateway"
	demoID      = "spiffe://quickstart.local/ns/demo/sa/demo"
	ledgerID    = "spiffe://quickstart.local/ns/ledger/sa/ledger"
)

// demoKey is the quickstart's API key; only its SHA-256 is written to disk.
const demoKey = "quickstart-demo-key"

func main() {
	httpAddr := flag.String("http", "127.0.0.1:8080", "edge listen address (a free port is used when taken)")
	adminAddr := flag.String("admin", "127.0.0.1:9901", "admin listen address (a free port is used when taken)")
	identity := flag.String("identity", "files", "where the mesh identities come from: files (a built-in CA made on the spot) or spire (a SPIRE server and agents started on loopback)")
	flag.Parse()
	if *identity != "files" && *identity != "spire" {
		fmt.Fprintf(os.Stderr, "quickstart: -identity %q: want files or spire\n", *identity)
		os.Exit(2)
	}
	err := func() error {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return run(ctx, *httpAddr, *adminAddr, *identity, os.Stdout)
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, after printing the tour to out. identity is
// files or spire.
func run(ctx context.Context, httpAddr, adminAddr, identity string, out io.Writer) error {
	// The demo calls the ledger through its sidecar's outbound listener,
	// known once that sidecar listens.
	var demoOutbound atomic.Value
	demo, err := serve(echoService("demo", func() string { s, _ := demoOutbound.Load().(string); return s }))
	if err != nil {
		return err
	}
	defer demo.Close()
	ledger, err := serve(echoService("ledger", nil))
	if err != nil {
		return err
	}
	defer ledger.Close()

	dir, err := os.MkdirTemp("", "causeway-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sum := sha256.Sum256([]byte(demoKey))
	keys := filepath.Join(dir, "partner-keys.txt")
	if err := os.WriteFile(keys, []byte("acme-corp:"+hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		return err
	}
	// The edge reaches the demo service through its sidecar over mutual
	// TLS: the two identities' sections of the routes and sidecar files.
	var ids map[string]string // SPIFFE ID -> its identity section
	if identity == "spire" {
		sockets, stopSPIRE, err := startSPIRE(dir, out)
		if err != nil {
			return err
		}
		defer stopSPIRE()
		ids = map[string]string{edgeID: fmt.Sprintf("  source: spire\n  socket: %q", sockets[edgeID])}
		for _, id := range []string{demoID, ledgerID} {
			ids[id] = fmt.Sprintf("source: spire, socket: %q, trust_domain: %s", sockets[id], trustDomain)
		}
	} else if ids, err = issueFiles(dir); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// Everything started below stops when run returns, early on an error
	// too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ledgerSidecar, err := startSidecar(ctx, dir, "ledger", fmt.Sprintf(sidecarTemplate, ids[ledgerID], ledger.Addr(), demoID), log)
	if err != nil {
		return err
	}
	defer ledgerSidecar.wait()
	sidecar, err := startSidecar(ctx, dir, "demo", fmt.Sprintf(sidecarTemplate, ids[demoID], demo.Addr(), edgeID)+
		fmt.Sprintf(outboundTemplate, ledgerSidecar.Addr("inbound"), ledgerID), log)
	if err != nil {
		return err
	}
	defer sidecar.wait()
	demoOutbound.Store(sidecar.Addr("outbound"))

	httpAddr, adminAddr = freeIfTaken(httpAddr), freeIfTaken(adminAddr)
	accessLog := filepath.Join(dir, "access.log")
	path := filepath.Join(dir, "causeway.yaml")
	cfg := fmt.Sprintf(routesTemplate, httpAddr, adminAddr, accessLog, keys, ids[edgeID],
		demo.Addr(), sidecar.Addr("inbound"), demoID)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	edge, err := gateway.NewEdge(ctx, gateway.EdgeOptions{ConfigPath: path, Logger: log})
	if err != nil {
		return err
	}
	if err := edge.Listen(); err != nil {
		edge.Close()
		return err
	}
	edgeDone := make(chan error, 1)
	go func() { edgeDone <- edge.Serve(ctx) }()
	if identity == "spire" {
		// The first SVIDs take a few seconds: the tour starts once both
		// ends hold theirs.
		for _, admin := range []string{edge.Addr("admin"), sidecar.Addr("admin"), ledgerSidecar.Addr("admin")} {
			if err := waitReady(ctx, "http://"+admin+"/readyz"); err != nil {
				cancel()
				<-edgeDone
				return err
			}
		}
	}
	printTour(out, edge.Addr("http"), edge.Addr("admin"), path, accessLog)
	return <-edgeDone
}

// workloads are the quickstart's identities and their files' prefixes.
var workloads = []struct{ id, name string }{{edgeID, "edge"}, {demoID, "demo"}, {ledgerID, "ledger"}}

// issueFiles makes a throw-away built-in CA in dir and certificates for the
// edge, the demo and the ledger, and returns their identity sections by ID
// (the edge's as lines of the routes file's mesh section).
func issueFiles(dir string) (map[string]string, error) {
	ca := filepath.Join(dir, "ca")
	if err := mesh.InitCA(ca, trustDomain); err != nil {
		return nil, err
	}
	bundle := filepath.Join(ca, mesh.BundleFile)
	ids := map[string]string{}
	for _, w := range workloads {
		id, err := mesh.ParseID(w.id)
		if err != nil {
			return nil, err
		}
		if err := mesh.IssueLeaf(ca, id, 24*time.Hour, filepath.Join(dir, w.name)); err != nil {
			return nil, err
		}
		cert, key := filepath.Join(dir, w.name+".pem"), filepath.Join(dir, w.name+"-key.pem")
		ids[w.id] = fmt.Sprintf("cert_file: %q, key_file: %q, bundle_file: %q", cert, key, bundle)
		if w.id == edgeID {
			ids[w.id] = fmt.Sprintf("  cert_file: %q\n  key_file: %q\n  bundle_file: %q", cert, key, bundle)
		}
	}
	return ids, nil
}

// runningSidecar is a sidecar serving until the context it was started
// with ends; wait waits for that.
type runningSidecar struct {
	*gateway.Sidecar
	done chan error
}

func (s *runningSidecar) wait() { <-s.done }

// startSidecar writes config to dir/NAME-sidecar.yaml and serves it until
// ctx ends.
func startSidecar(ctx context.Context, dir, name, config string, log *slog.Logger) (*runningSidecar, error) {
	path := filepath.Join(dir, name+"-sidecar.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return nil, err
	}
	sc, err := gateway.NewSidecar(ctx, gateway.SidecarOptions{ConfigPath: path, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := sc.Listen(); err != nil {
		sc.Close()
		return nil, err
	}
	rs := &runningSidecar{Sidecar: sc, done: make(chan error, 1)}
	go func() { rs.done <- sc.Serve(ctx) }()
	return rs, nil
}

// startSPIRE runs a spire-server for the quickstart's trust domain and one
// agent per workload (both run in this process, so the unix attestor cannot
// tell them apart by uid: each agent hands out only its own entry), and
// registers the edge, the demo and the ledger. It returns each ID's Workload API
// socket.
func startSPIRE(dir string, out io.Writer) (sockets map[string]string, stop func(), err error) {
	if spirelocal.Missing() != "" {
		// `go run ./examples/quickstart` from the repository: `make deps`
		// builds the binaries into .tools/bin.
		if abs, err := filepath.Abs(filepath.Join(".tools", "bin")); err == nil {
			os.Setenv("PATH", abs+string(os.PathListSeparator)+os.Getenv("PATH"))
		}
		if bin := spirelocal.Missing(); bin != "" {
			return nil, nil, fmt.Errorf("-identity spire: %s is neither in PATH nor in .tools/bin (make deps builds it)", bin)
		}
	}
	fmt.Fprintln(out, "Starting spire-server and three spire-agents on loopback; waiting for the first SVIDs...")
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	sub := func(name string) (string, error) {
		d := filepath.Join(dir, name)
		return d, os.MkdirAll(d, 0o700)
	}
	serverDir, err := sub("spire-server")
	if err != nil {
		return nil, nil, err
	}
	srv, err := spirelocal.StartServer(serverDir, spirelocal.ServerOptions{TrustDomain: trustDomain, SVIDTTL: time.Hour})
	if err != nil {
		return nil, nil, fmt.Errorf("-identity spire: %w", err)
	}
	stops = append(stops, srv.Stop)
	sockets = map[string]string{}
	for _, w := range workloads {
		agentDir, err := sub("spire-agent-" + w.name)
		if err != nil {
			stop()
			return nil, nil, err
		}
		a, err := srv.StartAgent(agentDir)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("-identity spire: %w", err)
		}
		stops = append(stops, a.Stop)
		if _, err := srv.CreateEntry(a, spirelocal.Entry{SPIFFEID: w.id}); err != nil {
			stop()
			return nil, nil, fmt.Errorf("-identity spire: registering %s: %w", w.id, err)
		}
		sockets[w.id] = a.Socket
	}
	return sockets, stop, nil
}

// waitReady polls a readiness URL until it answers 200 or ctx ends.
func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after a minute", url)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// freeIfTaken returns addr, or a free port on the same host when addr is in use.
func freeIfTaken(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return addr
	}
	host, _, _ := net.SplitHostPort(addr)
	ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return addr
	}
	defer ln.Close()
	return ln.Addr().String()
}

func printTour(out io.Writer, edge, admin, routesFile, accessLog string) {
	fmt.Fprintf(out, `Causeway quickstart: an edge in front of a demo service.

Routes file (edit it: the edge reloads it on save): %s
Access log: %s

Try:
  curl -i http://%[3]s/public/hello                    # proxied, /public stripped
  curl -i http://%[3]s/nowhere                         # 404 with a JSON error body
  curl -i http://%[3]s/partners/orders                 # 401: an API key is required
  curl -i -H 'X-API-Key: %[5]s' http://%[3]s/partners/orders
  for i in 1 2 3 4 5 6 7; do curl -s -o /dev/null -w '%%{http_code} ' http://%[3]s/limited; done; echo   # 5 x 200, then 429
  curl -i http://%[3]s/mesh/hello                      # via the demo's sidecar over mTLS: see X-Causeway-Peer-Id
  curl -s -H 'X-API-Key: %[5]s' http://%[3]s/mesh/partners/ledger   # the partner arrives at the ledger, two sidecars on: see X-Causeway-Caller-*
  curl -s http://%[4]s/config                          # the active configuration
  curl -s http://%[4]s/metrics | grep causeway_requests_total

Press Ctrl-C to stop.
`, routesFile, accessLog, edge, admin, demoKey)
}

// echoService answers with what it was sent, so the effect of the edge and
// the sidecars is visible: forwarded headers, request id, the partner's
// name, the peer's and the caller's identities. The demo, asked for
// /ledger, calls the ledger through its sidecar (outbound gives that
// listener's address), passing the caller token on as it would pass
// traceparent, and includes the ledger's answer.
func echoService(name string, outbound func() string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		seen := map[string]string{}
		for _, h := range []string{"X-Request-Id", "X-Forwarded-For", "X-Forwarded-Proto", "X-Partner", "X-Api-Key", "Authorization", "X-Causeway-Peer-Id",
			"X-Causeway-Caller-Subject", "X-Causeway-Caller-Authenticator", "X-Causeway-Caller-Anonymous", "X-Causeway-Caller-Chain"} {
			if v := r.Header.Get(h); v != "" {
				seen[h] = v
			}
		}
		answer := map[string]any{"service": name, "method": r.Method, "path": r.URL.Path, "headers": seen}
		if outbound != nil && r.URL.Path == "/ledger" {
			answer["ledger"] = callLedger(r, outbound())
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(answer); err != nil && !errors.Is(err, net.ErrClosed) {
			slog.Warn(name+" service", "error", strings.TrimSpace(err.Error()))
		}
	}
}

// callLedger asks the ledger through the sidecar listening at outbound.
func callLedger(in *http.Request, outbound string) any {
	req, err := http.NewRequestWithContext(in.Context(), http.MethodGet, "http://"+outbound+"/entries", nil)
	if err != nil {
		return err.Error()
	}
	req.Host = "ledger"
	if tok := in.Header.Get("Causeway-Caller"); tok != "" {
		req.Header.Set("Causeway-Caller", tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return fmt.Sprintf("status %d", resp.StatusCode)
	}
	return v
}

// service is an HTTP server on a free loopback port.
type service struct {
	ln  net.Listener
	srv *http.Server
}

func serve(h http.Handler) (*service, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &service{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *service) Addr() string { return s.ln.Addr().String() }
func (s *service) Close()       { _ = s.srv.Close() }
