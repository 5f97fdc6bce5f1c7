// Package spirelocal runs a SPIRE deployment on loopback: spire-server and
// spire-agent (built by `make deps` into .tools/bin, or any in PATH) with
// the join_token node attestor, the unix workload attestor and the 1 s
// cache and sync intervals that make an SVID arrive in 2-3 s. Tests use it
// through internal/testspire; the quickstart's `-identity spire` too.
//
// The unix attestor tells workloads apart by uid or path; workloads that
// share a process (a test, the quickstart) look the same to it. Each such
// workload therefore gets an agent of its own (Server.StartAgent): an
// entry's parent is that agent's ID, so the agent hands out exactly the
// entries made for it.
package spirelocal

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// startTimeout is a safety net against a hung start, not an expectation:
// the server and an agent are healthy in a few seconds.
const startTimeout = 60 * time.Second

// Missing names the first SPIRE binary not found in PATH, or is empty.
func Missing() string {
	for _, bin := range []string{"spire-server", "spire-agent"} {
		if _, err := exec.LookPath(bin); err != nil {
			return bin
		}
	}
	return ""
}

// ServerOptions configures a server.
type ServerOptions struct {
	// TrustDomain defaults to example.org.
	TrustDomain string
	// SVIDTTL is the default X.509-SVID lifetime (default 1m).
	SVIDTTL time.Duration
	// CATTL is the lifetime of the server's signing CA (default 24h).
	CATTL time.Duration
	// UpstreamCert and UpstreamKey, when set, make the server's CA an
	// intermediate of that CA (the disk UpstreamAuthority), so the bundle
	// holds its root.
	UpstreamCert, UpstreamKey string
}

// Server is one spire-server.
type Server struct {
	TrustDomain string
	Dir         string
	socket      string
	port        int
	proc        *process
}

// StartServer runs a spire-server whose files live in dir.
func StartServer(dir string, o ServerOptions) (*Server, error) {
	if o.TrustDomain == "" {
		o.TrustDomain = "example.org"
	}
	if o.SVIDTTL == 0 {
		o.SVIDTTL = time.Minute
	}
	if o.CATTL == 0 {
		o.CATTL = 24 * time.Hour
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// A unix socket path is limited to about 100 bytes: keep it short.
	sockDir, err := os.MkdirTemp("", "spire-s")
	if err != nil {
		return nil, err
	}
	s := &Server{TrustDomain: o.TrustDomain, Dir: dir, socket: filepath.Join(sockDir, "s.sock"), port: port}
	upstream := ""
	if o.UpstreamCert != "" {
		upstream = fmt.Sprintf(`
  UpstreamAuthority "disk" {
    plugin_data {
      cert_file_path = %q
      key_file_path = %q
    }
  }`, o.UpstreamCert, o.UpstreamKey)
	}
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "INFO"
  ca_key_type = "ec-p256"
  ca_ttl = %q
  default_x509_svid_ttl = %q
  experimental {
    cache_reload_interval = "1s"
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }%s
}
`, port, s.socket, o.TrustDomain, filepath.Join(dir, "data"), o.CATTL.String(), o.SVIDTTL.String(), filepath.Join(dir, "data", "datastore.sqlite3"), upstream)
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	s.proc, err = startProcess(filepath.Join(dir, "server.log"), "spire-server", "run", "-config", confPath)
	if err != nil {
		return nil, err
	}
	if err := waitHealthy(s.proc, "spire-server", "healthcheck", "-socketPath", s.socket); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop ends the server.
func (s *Server) Stop() {
	if s.proc != nil {
		s.proc.stop()
	}
	_ = os.RemoveAll(filepath.Dir(s.socket))
}

// subCmd runs a spire-server CLI command ("entry create") against this
// server and returns its output.
func (s *Server) subCmd(a, b string, args ...string) (string, error) {
	full := append([]string{a, b, "-socketPath", s.socket}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "spire-server", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("spire-server %s: %w: %s", strings.Join(full, " "), err, out)
	}
	return string(out), nil
}

// Bundle is the server's trust bundle, PEM.
func (s *Server) Bundle() ([]byte, error) {
	out, err := s.subCmd("bundle", "show", "-format", "pem")
	return []byte(out), err
}

// SetFederatedBundle makes the server hand out pem (the roots of trust
// domain td) to the entries that federate with td.
func (s *Server) SetFederatedBundle(td string, pem []byte) error {
	f := filepath.Join(s.Dir, "federated-"+td+".pem")
	if err := os.WriteFile(f, pem, 0o600); err != nil {
		return err
	}
	_, err := s.subCmd("bundle", "set", "-id", "spiffe://"+td, "-path", f, "-format", "pem")
	return err
}

// DeleteFederatedBundle removes the bundle of td.
func (s *Server) DeleteFederatedBundle(td string) error {
	_, err := s.subCmd("bundle", "delete", "-id", "spiffe://"+td, "-mode", "dissociate")
	return err
}

// Entry is a registration entry to create.
type Entry struct {
	// SPIFFEID is the workload's ID.
	SPIFFEID string
	// TTL is the X.509-SVID lifetime (0: the server's default).
	TTL time.Duration
	// FederatesWith are trust domains whose bundles the workload receives.
	FederatesWith []string
}

var entryIDRe = regexp.MustCompile(`Entry ID\s*:\s*(\S+)`)

// CreateEntry registers e for the workloads of agent a (the test process,
// selector unix:uid) and returns the entry's ID.
func (s *Server) CreateEntry(a *Agent, e Entry) (string, error) {
	args := []string{"-parentID", a.ID, "-spiffeID", e.SPIFFEID, "-selector", "unix:uid:" + strconv.Itoa(os.Getuid())}
	if e.TTL > 0 {
		args = append(args, "-x509SVIDTTL", strconv.Itoa(int(e.TTL/time.Second)))
	}
	for _, td := range e.FederatesWith {
		args = append(args, "-federatesWith", "spiffe://"+td)
	}
	out, err := s.subCmd("entry", "create", args...)
	if err != nil {
		return "", err
	}
	m := entryIDRe.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("spire-server entry create: no entry ID in %q", out)
	}
	return m[1], nil
}

// DeleteEntry removes a registration entry: its SVID is not renewed.
func (s *Server) DeleteEntry(id string) error {
	_, err := s.subCmd("entry", "delete", "-entryID", id)
	return err
}

// Agent is one spire-agent attested to a Server with a join token.
type Agent struct {
	// ID is the agent's own SPIFFE ID, the parent of its entries.
	ID string
	// Socket is the Workload API address, unix:///....
	Socket string
	Dir    string

	mu       sync.Mutex
	proc     *process
	confPath string
	sockDir  string
}

var tokenRe = regexp.MustCompile(`Token:\s*(\S+)`)

// StartAgent runs an agent for s whose files live in dir.
func (s *Server) StartAgent(dir string) (*Agent, error) {
	out, err := s.subCmd("token", "generate", "-ttl", "3600")
	if err != nil {
		return nil, err
	}
	m := tokenRe.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("spire-server token generate: no token in %q", out)
	}
	token := m[1]
	bundle, err := s.Bundle()
	if err != nil {
		return nil, err
	}
	bundlePath := filepath.Join(dir, "bootstrap.pem")
	if err := os.WriteFile(bundlePath, bundle, 0o600); err != nil {
		return nil, err
	}
	sockDir, err := os.MkdirTemp("", "spire-a")
	if err != nil {
		return nil, err
	}
	a := &Agent{
		ID:      "spiffe://" + s.TrustDomain + "/spire/agent/join_token/" + token,
		Socket:  "unix://" + filepath.Join(sockDir, "api.sock"),
		Dir:     dir,
		sockDir: sockDir,
	}
	conf := fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_bundle_path = %q
  trust_domain = %q
  experimental {
    sync_interval = "1s"
  }
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  # disk, not memory: a restarted agent finds its SVID's key and resumes
  # without re-attesting (a join token is used up by the first attestation).
  KeyManager "disk" {
    plugin_data {
      directory = %q
    }
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(dir, "data"), s.port, filepath.Join(sockDir, "api.sock"), bundlePath, s.TrustDomain, filepath.Join(dir, "keys"))
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		return nil, err
	}
	a.confPath = filepath.Join(dir, "agent.conf")
	if err := os.WriteFile(a.confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if err := a.start("-joinToken", token); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agent) start(extra ...string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	args := append([]string{"run", "-config", a.confPath}, extra...)
	p, err := startProcess(filepath.Join(a.Dir, "agent.log"), "spire-agent", args...)
	if err != nil {
		return err
	}
	if err := waitHealthy(p, "spire-agent", "healthcheck", "-socketPath", strings.TrimPrefix(a.Socket, "unix://")); err != nil {
		p.stop()
		return err
	}
	a.proc = p
	return nil
}

// Kill ends the agent abruptly (SIGKILL), as a crash would.
func (a *Agent) Kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc != nil {
		a.proc.kill()
		a.proc = nil
	}
}

// Restart starts a killed agent again; it re-attests with the SVID it keeps
// in its data directory.
func (a *Agent) Restart() error { return a.start() }

// Stop ends the agent and removes its socket folder.
func (a *Agent) Stop() {
	a.Kill()
	_ = os.RemoveAll(a.sockDir)
}

// process is a started binary and the wait for its end. exited is closed
// once the process has ended (err is then its exit), so any number of
// stops, kills and checks can wait for it.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
	log    string
}

func startProcess(logPath, bin string, args ...string) (*process, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// waitHealthy polls a healthcheck command until it passes, the process
// exits, or startTimeout passes.
func waitHealthy(p *process, bin string, args ...string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := exec.CommandContext(ctx, bin, args...).Run()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited while starting (%w): %s", bin, p.err, tail(p.log))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after %s: %s", bin, startTimeout, tail(p.log))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
