package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causewayhq/causeway/mesh/meshtest"
	"github.com/causewayhq/causeway/plugins"
	"github.com/causewayhq/causeway/routes"
)

// gatePlugin refuses every instance, but only once gateBeforeRefusal (set
// by a test) returns: it lets a test hold a routes file's build open,
// after the mesh feature built its source, until that source has done
// what the test waits for.
const gatePlugin = "test-refuse-after-gate"

var gateBeforeRefusal struct {
	mu sync.Mutex
	f  func()
}

func init() {
	plugins.Register(gatePlugin, func(context.Context, routes.Raw) (plugins.Instance, error) {
		gateBeforeRefusal.mu.Lock()
		f := gateBeforeRefusal.f
		gateBeforeRefusal.mu.Unlock()
		if f != nil {
			f()
		}
		return nil, errors.New("refused on purpose, after the gate")
	})
}

// deadAgent is a unix socket where a Workload API agent would be, which
// accepts connections and drops them at once, like an agent that is not
// serving. accepted delivers one value per dial.
type deadAgent struct {
	socket   string
	accepted chan struct{}
}

func startDeadAgent(t *testing.T) *deadAgent {
	t.Helper()
	// A short path: unix socket names are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "cw-api") //nolint:usetesting // t.TempDir is too long for a unix socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	d := &deadAgent{socket: "unix://" + path, accepted: make(chan struct{}, 100)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case d.accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return d
}

// waitDials waits for n dials of the Workload API client. The client
// reports a failed attempt before it dials again, so after the second dial
// the first failure has been reported to the source's Connected callback.
func (d *deadAgent) waitDials(t *testing.T, n int) {
	for range n {
		select {
		case <-d.accepted:
		case <-time.After(30 * time.Second): // a safety net, not an expectation
			t.Errorf("the Workload API client did not dial %s", d.socket)
			return
		}
	}
}

// A refused routes file changes neither causeway_workload_api_connected
// nor the expiry gauge: the mesh source it built may have reached (or
// failed to reach) its agent before the file was refused, but only a
// committed source publishes. A file that is then accepted publishes its
// source's state and drops the series of the source it replaced.
func TestRefusedReloadLeavesIdentityMetrics(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	edgeFiles := ca.IssueFiles(t.TempDir(), edgeID)
	up := echoUpstream(t, "up")
	agent := startDeadAgent(t)
	file := func(mesh, plugins string) string {
		return listenHeader + mesh + fmt.Sprintf("upstreams:\n  up: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n", hostPort(up)) + plugins
	}
	filesMesh := fmt.Sprintf("mesh: {trust_domain: example.org, cert_file: %q, key_file: %q, bundle_file: %q}\n", edgeFiles.Cert, edgeFiles.Key, edgeFiles.Bundle)
	spireMesh := fmt.Sprintf("mesh: {trust_domain: example.org, source: spire, socket: %q}\n", agent.socket)
	te := startEdge(t, file(filesMesh, ""))

	gateBeforeRefusal.mu.Lock()
	gateBeforeRefusal.f = func() { agent.waitDials(t, 2) }
	gateBeforeRefusal.mu.Unlock()
	t.Cleanup(func() {
		gateBeforeRefusal.mu.Lock()
		gateBeforeRefusal.f = nil
		gateBeforeRefusal.mu.Unlock()
	})
	writeFile(t, te.path, file(spireMesh, "plugins:\n  gate: {use: "+gatePlugin+"}\n"))
	if err := te.Reload(context.Background()); err == nil {
		t.Fatal("the file was accepted")
	}
	_, metrics := get(t, te.admin+"/metrics")
	if strings.Contains(string(metrics), "causeway_workload_api_connected{") {
		t.Errorf("a refused file's Workload API source published its state:\n%s", grepLines(string(metrics), "causeway_workload_api_connected"))
	}
	if !strings.Contains(string(metrics), `causeway_certificate_expiry_timestamp_seconds{name="`+edgeID+`"}`) {
		t.Errorf("the live identity's expiry is gone after a refused file:\n%s", grepLines(string(metrics), "causeway_certificate_expiry"))
	}

	// Accepted: the source is live and says the agent does not answer.
	writeFile(t, te.path, file(spireMesh, ""))
	if err := te.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, te.admin+"/metrics", `causeway_workload_api_connected{socket="`+agent.socket+`"} 0`)
	_, metrics = get(t, te.admin+"/metrics")
	if strings.Contains(string(metrics), edgeID) {
		t.Errorf("the expiry of the replaced identity is still published:\n%s", grepLines(string(metrics), "causeway_certificate_expiry"))
	}

	// Back to files: the Workload API series goes with its source.
	writeFile(t, te.path, file(filesMesh, ""))
	if err := te.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, metrics = get(t, te.admin+"/metrics")
	if strings.Contains(string(metrics), "causeway_workload_api_connected{") {
		t.Errorf("the replaced Workload API source's series stays:\n%s", grepLines(string(metrics), "causeway_workload_api_connected"))
	}
	if !strings.Contains(string(metrics), `causeway_certificate_expiry_timestamp_seconds{name="`+edgeID+`"}`) {
		t.Errorf("no expiry for the files identity after switching back")
	}
}

// The sidecar: a refused file that changes the identity does not publish
// the refused certificate's expiry; an accepted one replaces the old
// identity's series with its own. (The Workload API state goes through the
// same gate; the edge's test above covers it.)
func TestSidecarRefusedReloadLeavesIdentityMetrics(t *testing.T) {
	ca := meshtest.NewCA(t, "example.org")
	svc := echoUpstream(t, "orders")
	a := ca.IssueFiles(t.TempDir(), ordersID)
	b := ca.IssueFiles(t.TempDir(), paymentsID)
	sc := startSidecar(t, sidecarConfig(a, hostPort(svc), []string{edgeID}, nil))
	metricsURL := "http://" + sc.Addr("admin") + "/metrics"
	expiry := func(id string) string { return `causeway_certificate_expiry_timestamp_seconds{name="` + id + `"}` }
	_, metrics := get(t, metricsURL)
	if !strings.Contains(string(metrics), expiry(ordersID)) {
		t.Fatalf("no expiry for the live identity at start")
	}

	// Refused after the identity is built: the access log cannot be opened.
	badLog := "access_log: {output: \"" + filepath.Join(t.TempDir(), "no", "such", "dir", "access.log") + "\"}\n"
	writeFile(t, sc.path, strings.Replace(sidecarConfig(b, hostPort(svc), []string{edgeID}, nil), "access_log: {output: \"off\"}\n", badLog, 1))
	if err := sc.load(context.Background(), false); err == nil {
		t.Fatal("the file was accepted")
	}
	_, metrics = get(t, metricsURL)
	if strings.Contains(string(metrics), paymentsID) {
		t.Errorf("a refused file's identity was published:\n%s", grepLines(string(metrics), "causeway_certificate_expiry"))
	}
	if !strings.Contains(string(metrics), expiry(ordersID)) {
		t.Errorf("the live identity's expiry is gone after a refused file")
	}

	writeFile(t, sc.path, sidecarConfig(b, hostPort(svc), []string{edgeID}, nil))
	if err := sc.load(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	_, metrics = get(t, metricsURL)
	if !strings.Contains(string(metrics), expiry(paymentsID)) || strings.Contains(string(metrics), ordersID) {
		t.Errorf("after the accepted file, want the expiry of %s only:\n%s", paymentsID, grepLines(string(metrics), "causeway_certificate_expiry"))
	}
}

func grepLines(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// Removing the mesh section retires the edge's identity: readiness no
// longer waits for it and its series go. Before, the replaced source stayed
// live: an edge whose agent was down stayed unready after the section was
// gone.
func TestMeshSectionRemovedRetiresIdentity(t *testing.T) {
	up := echoUpstream(t, "up")
	agent := startDeadAgent(t)
	routesPart := fmt.Sprintf("upstreams:\n  up: {endpoints: [%q]}\nroutes:\n  - {name: r, match: {path_prefix: /}, upstream: up}\n", hostPort(up))
	te := startEdge(t, listenHeader+fmt.Sprintf("mesh: {trust_domain: example.org, source: spire, socket: %q}\n", agent.socket)+routesPart)
	waitMetric(t, te.admin+"/metrics", `causeway_workload_api_connected{socket="`+agent.socket+`"} 0`)
	if resp, _ := get(t, te.admin+"/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz with no identity: %d", resp.StatusCode)
	}
	writeFile(t, te.path, listenHeader+routesPart)
	if err := te.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, te.admin+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz after the mesh section was removed: %d %s", resp.StatusCode, body)
	}
	if _, metrics := get(t, te.admin+"/metrics"); strings.Contains(string(metrics), "causeway_workload_api_connected{") {
		t.Errorf("the removed identity's series stays:\n%s", grepLines(string(metrics), "causeway_workload_api_connected"))
	}
}
