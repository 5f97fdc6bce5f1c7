//go:build linux

package test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/causewayhq/causeway/internal/testredis"
	"github.com/causewayhq/causeway/mesh/meshtest"
)

// budgetStage is one row of the CPU budget: the edge's stages a request
// goes through. Each row adds one stage to the row above, so the CPU a
// stage costs is the difference between neighbours in one run.
type budgetStage struct {
	name    string
	tls     bool
	jwt     bool
	limit   string // "", "memory" or "redis"
	headers bool   // the headers plugin, both sides
	mesh    bool   // mTLS to a sidecar process, which forwards to the service
}

var budgetStages = []budgetStage{
	{name: "plain proxy"},
	{name: "+ TLS 1.3", tls: true},
	{name: "+ RS256 JWT (verified-token cache)", tls: true, jwt: true},
	{name: "+ in-memory rate limit", tls: true, jwt: true, limit: "memory"},
	{name: "+ headers plugin", tls: true, jwt: true, limit: "memory", headers: true},
	{name: "Redis limit instead of in-memory", tls: true, jwt: true, limit: "redis", headers: true},
	{name: "+ mTLS hop to a sidecar", tls: true, jwt: true, limit: "redis", headers: true, mesh: true},
}

// TestPipelineCPUBudget measures what each stage of the edge costs in CPU
// per request, with the edge and the sidecar as processes of their own
// (`causeway edge`, `causeway sidecar`, built from this tree) so each one's
// CPU time is read apart from the clients', the service's and Redis's, out
// of /proc/PID/stat. Requests/s on two shared cores mostly measures who
// else runs; CPU per request is what a stage costs wherever it runs, and
// what the performance budget is stated in: the whole pipeline (TLS, RS256
// JWT, Redis limit, mTLS hop, sidecar) at most 3x the plain proxy.
//
// By default (make test) each stage serves 1,000 requests once: the table
// is logged, and what is asserted is what must hold at any speed. Every
// request gets its 64-byte answer, the service receives exactly the
// requests sent (each with the headers plugin's header where it runs),
// and a request with a forged token gets 401 and never reaches the
// service. CAUSEWAY_CPU_BUDGET=1 (make bench-cpu) serves 20,000 requests
// per stage in 3 interleaved rounds and logs the medians.
// CAUSEWAY_CPU_BUDGET_PROFILES=DIR also saves a 3-second CPU profile of the
// edge and of the sidecar under each stage's load of the last round, as
// DIR/<stage>-edge.pb.gz and DIR/<stage>-sidecar.pb.gz, for `go tool pprof`;
// CAUSEWAY_CPU_BUDGET_REQUESTS=N sets the requests per stage.
func TestPipelineCPUBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs an edge, a sidecar and redis-server as processes")
	}
	requests, rounds := 1000, 1
	if os.Getenv("CAUSEWAY_CPU_BUDGET") == "1" {
		requests, rounds = 20_000, 3
	}
	if v := os.Getenv("CAUSEWAY_CPU_BUDGET_REQUESTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("CAUSEWAY_CPU_BUDGET_REQUESTS=%q: want a positive number", v)
		}
		requests = n
	}
	const conns = 16
	profiles := os.Getenv("CAUSEWAY_CPU_BUDGET_PROFILES")
	if profiles != "" {
		if err := os.MkdirAll(profiles, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	bin := buildCauseway(t, dir)

	var received, withHeader atomic.Int64
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		if r.Header.Get("X-Budget-Stage") == "headers" {
			withHeader.Add(1)
		}
		_, _ = io.WriteString(w, strings.Repeat("x", 64))
	}))
	defer svc.Close()
	svcAddr := strings.TrimPrefix(svc.URL, "http://")

	rdb := testredis.Start(t)
	certFile, keyFile, roots := serverCert(t, dir, "api.example.com")
	signer, pubFile := rsaKey(t, dir)
	token, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "https://id.test/", "aud": "api", "sub": "budget", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(signer)
	if err != nil {
		t.Fatal(err)
	}

	// One sidecar for the whole run: its CPU is read around every stage,
	// and only the mesh stage sends it anything.
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), "spiffe://example.org/ns/edge/sa/gateway")
	svcFiles := ca.IssueFiles(t.TempDir(), "spiffe://example.org/ns/shop/sa/orders")
	inbound := freeTCPAddr(t)
	sidecar := startBudgetProcess(t, bin, filepath.Join(dir, "sidecar"), "sidecar", profiles != "", fmt.Sprintf(`version: 1
identity: {cert_file: %q, key_file: %q, bundle_file: %q}
access_log: {output: "off"}
admin: %%q
inbound: {listen: %q, forward_to: %q, allow: ["spiffe://example.org/ns/edge/sa/gateway"]}
`, svcFiles.Cert, svcFiles.Key, svcFiles.Bundle, inbound, svcAddr))

	edgeConfig := func(s budgetStage) (cfg, url string) {
		var b strings.Builder
		b.WriteString("version: 1\naccess_log: {output: \"off\"}\n")
		scheme := "http"
		if s.tls {
			scheme = "https"
			fmt.Fprintf(&b, "listen: {https: %%q, admin: %%q}\ntls:\n  min_version: \"1.3\"\n  certificates: [{cert_file: %q, key_file: %q}]\n", certFile, keyFile)
		} else {
			b.WriteString("listen: {http: %q, admin: %q}\n")
		}
		route := "  - {name: orders, match: {path_prefix: /orders}, upstream: orders"
		if s.jwt {
			fmt.Fprintf(&b, "authenticators:\n  users: {jwt: {issuer: https://id.test/, audiences: [api], public_key_files: [%q], algorithms: [RS256]}}\n", pubFile)
			route += ", auth: users"
		}
		switch s.limit {
		case "memory":
			b.WriteString("rate_limits:\n  per-client: {key: client_ip, limit: 100000000, per: 1s}\n")
			route += ", rate_limit: per-client"
		case "redis":
			fmt.Fprintf(&b, "redis: {url: %q, on_error: deny, timeout: 1s}\nrate_limits:\n  per-client: {key: client_ip, limit: 100000000, per: 1s, mode: exact}\n", rdb.URL())
			route += ", rate_limit: per-client"
		}
		if s.headers {
			b.WriteString("plugins:\n  stage: {use: headers, config: {request: {set: {X-Budget-Stage: headers}}, response: {set: {X-Frame-Options: DENY}}}}\n")
			route += ", plugins: [stage]"
		}
		upstream := fmt.Sprintf("{endpoints: [%q]}", svcAddr)
		if s.mesh {
			fmt.Fprintf(&b, "mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q}\n", edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle)
			upstream = fmt.Sprintf("{endpoints: [%q], mesh_identity: \"spiffe://example.org/ns/shop/sa/orders\"}", inbound)
		}
		fmt.Fprintf(&b, "upstreams:\n  orders: %s\nroutes:\n%s}\n", upstream, route)
		return b.String(), scheme
	}

	// cpu[stage] holds one figure per round, µs per request.
	type sample struct{ edge, sidecar float64 }
	cpu := make([][]sample, len(budgetStages))
	for round := range rounds {
		for i, s := range budgetStages {
			t.Run(fmt.Sprintf("round%d/%d", round+1, i+1), func(t *testing.T) {
				cfg, scheme := edgeConfig(s)
				edge := startBudgetProcess(t, bin, filepath.Join(dir, fmt.Sprintf("edge-%d-%d", round, i)), "edge", profiles != "", cfg)
				defer edge.stop(t)
				client := &http.Client{Transport: &http.Transport{
					MaxIdleConnsPerHost: conns,
					TLSClientConfig:     &tls.Config{RootCAs: roots, ServerName: "api.example.com", MinVersion: tls.VersionTLS13},
				}}
				defer client.CloseIdleConnections()
				url := scheme + "://" + edge.addr + "/orders/1"
				call := func(tok string) (*http.Response, []byte, error) {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					if tok != "" {
						req.Header.Set("Authorization", "Bearer "+tok)
					}
					resp, err := client.Do(req)
					if err != nil {
						return nil, nil, err
					}
					defer resp.Body.Close()
					body, err := io.ReadAll(resp.Body)
					return resp, body, err
				}
				tok := ""
				if s.jwt {
					tok = token
				}

				// Warm up: every client connection opened (TLS handshakes
				// are not what a keep-alive request costs), the upstream
				// pool filled, the token verified once.
				if err := budgetLoad(conns, conns*8, call, tok, s.headers); err != nil {
					t.Fatalf("warm-up: %v", err)
				}
				if s.jwt {
					// A forged token (the payload's subject changed, the
					// signature kept) is refused and reaches nothing.
					parts := strings.Split(token, ".")
					forged := parts[0] + "." + parts[1][:len(parts[1])-2] + "AA." + parts[2]
					before := received.Load()
					resp, _, err := call(forged)
					if err != nil {
						t.Fatal(err)
					}
					if resp.StatusCode != http.StatusUnauthorized || received.Load() != before {
						t.Fatalf("forged token: status %d, service requests %d -> %d", resp.StatusCode, before, received.Load())
					}
				}
				r0, h0 := received.Load(), withHeader.Load()
				var profiling sync.WaitGroup
				if profiles != "" && round == rounds-1 {
					for _, p := range []struct {
						proc *budgetProcess
						name string
					}{{edge, "edge"}, {sidecar, "sidecar"}} {
						profiling.Go(func() {
							p.proc.saveCPUProfile(t, filepath.Join(profiles, fmt.Sprintf("%d-%s.pb.gz", i+1, p.name)))
						})
					}
				}
				e0, s0 := procCPUTime(t, edge.pid()), procCPUTime(t, sidecar.pid())
				err := budgetLoad(conns, requests, call, tok, s.headers)
				e1, s1 := procCPUTime(t, edge.pid()), procCPUTime(t, sidecar.pid())
				profiling.Wait()
				if err != nil {
					t.Fatal(err)
				}
				if got := received.Load() - r0; got != int64(requests) {
					t.Errorf("the service received %d requests, %d were sent", got, requests)
				}
				if s.headers {
					if got := withHeader.Load() - h0; got != int64(requests) {
						t.Errorf("%d of %d requests reached the service with the headers plugin's header", got, requests)
					}
				}
				n := float64(requests)
				cpu[i] = append(cpu[i], sample{
					edge:    float64((e1 - e0).Microseconds()) / n,
					sidecar: float64((s1 - s0).Microseconds()) / n,
				})
			})
		}
	}

	median := func(xs []float64) float64 {
		xs = slices.Clone(xs)
		slices.Sort(xs)
		if len(xs) == 0 {
			return 0
		}
		return xs[len(xs)/2]
	}
	var table strings.Builder
	fmt.Fprintf(&table, "CPU per request, medians of %d round(s) of %d requests, %d keep-alive clients (64-byte answers):\n", rounds, requests, conns)
	fmt.Fprintf(&table, "| stages | edge µs/req | sidecar µs/req | total µs/req | ÷ plain | added |\n|---|--:|--:|--:|--:|--:|\n")
	var plain, prev float64
	for i, s := range budgetStages {
		var es, ss []float64
		for _, c := range cpu[i] {
			es = append(es, c.edge)
			ss = append(ss, c.sidecar)
		}
		e, sc := median(es), median(ss)
		if !s.mesh {
			// Only the mesh stage sends the sidecar anything; what it
			// spends otherwise is its own idle work, not this stage's.
			sc = 0
		}
		total := e + sc
		if i == 0 {
			plain = total
		}
		ratio := 0.0
		if plain > 0 {
			ratio = total / plain
		}
		fmt.Fprintf(&table, "| %s | %.1f | %.1f | %.1f | %.2f | %+.1f |\n", s.name, e, sc, total, ratio, total-prev)
		prev = total
	}
	t.Log("\n" + table.String())
}

// budgetLoad sends n requests over conns concurrent keep-alive clients and
// checks each answer: 200, 64 bytes, and the headers plugin's response
// header where it runs.
func budgetLoad(conns, n int, call func(string) (*http.Response, []byte, error), tok string, headers bool) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				resp, body, err := call(tok)
				switch {
				case err != nil:
				case resp.StatusCode != http.StatusOK:
					err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
				case len(body) != 64:
					err = fmt.Errorf("answer of %d bytes, want 64", len(body))
				case headers && resp.Header.Get("X-Frame-Options") != "DENY":
					err = errors.New("the headers plugin's response header is missing")
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// budgetProcess is a `causeway edge` or `causeway sidecar` child process.
type budgetProcess struct {
	cmd   *exec.Cmd
	done  chan error
	addr  string // the edge's data listener
	admin string
	once  sync.Once
}

// startBudgetProcess writes cfg (with %q for the data listener and the
// admin address in an edge's, %q for the admin address in a sidecar's)
// and starts the process, waiting for its admin /healthz. pprof serves
// /debug/pprof/ on the admin listener.
func startBudgetProcess(t *testing.T, bin, dir, mode string, pprof bool, cfg string) *budgetProcess {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &budgetProcess{done: make(chan error, 1)}
	admin := freeTCPAddr(t)
	p.admin = admin
	if mode == "edge" {
		p.addr = freeTCPAddr(t)
		cfg = fmt.Sprintf(cfg, p.addr, admin)
	} else {
		cfg = fmt.Sprintf(cfg, admin)
	}
	path := filepath.Join(dir, "causeway.yaml")
	writeConfig(t, path, cfg)
	logs, err := os.Create(filepath.Join(dir, mode+".log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() })
	args := []string{mode, "-config", path, "-log-level", "warn"}
	if pprof {
		args = append(args, "-pprof")
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logs, logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", mode, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case err := <-p.done:
			b, _ := os.ReadFile(logs.Name())
			t.Fatalf("%s exited at start: %v\n%s", mode, err, b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logs.Name())
			t.Fatalf("%s did not become healthy\n%s", mode, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *budgetProcess) pid() int { return p.cmd.Process.Pid }

// profileSeconds is how long saveCPUProfile profiles.
var profileSeconds = 5

// saveCPUProfile writes a CPU profile of the process to path.
func (p *budgetProcess) saveCPUProfile(t *testing.T, path string) {
	resp, err := http.Get("http://" + p.admin + "/debug/pprof/profile?seconds=" + strconv.Itoa(profileSeconds))
	if err != nil {
		t.Errorf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		t.Errorf("profile: %v", err)
	}
}

func (p *budgetProcess) stop(t *testing.T) {
	p.once.Do(func() { stopChild(t, p.cmd, p.done) })
}

// procCPUTime is the user and system CPU time a process has used, all its
// threads, those that exited included: utime and stime of /proc/PID/stat,
// in clock ticks of 1/100 s (USER_HZ on Linux).
func procCPUTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) may hold spaces; what follows its ")" is
	// field 3 (the state) onwards, so utime and stime (14, 15) are the
	// 12th and 13th.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100)
}
