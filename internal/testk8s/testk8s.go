// Package testk8s runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver (built by `make deps` into .tools/bin) on free loopback
// ports, the way envtest does, with RBAC on, a static admin token, and
// generated service-account keys. There is no kubelet and no controller
// manager: Pods never run, and tests create the objects a controller would
// (EndpointSlices, statuses) themselves.
//
// Starting one takes a few seconds, so a package starts one in TestMain
// (StartMain) and its tests share it, each in namespaces of its own. A test
// that needs the control plane fails, never skips, when the binaries are
// missing, so a machine without them cannot report green.
package testk8s

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startTimeout bounds how long the control plane may take to become
// ready. It is a safety net against a hung start, not an expectation:
// /readyz answers in about 5 s on a quiet 2-core machine.
const startTimeout = 90 * time.Second

const missingHelp = "%s not found in PATH: `make deps` builds it into .tools/bin (scripts/build-k8s.sh)"

// ControlPlane is one etcd and one kube-apiserver.
type ControlPlane struct {
	// Host is the API server's base URL, https://127.0.0.1:PORT.
	Host string
	// Token is a bearer token of a member of system:masters.
	Token string
	// CAData is the PEM of the certificate that signs the API server's
	// serving certificate (it is self-signed).
	CAData []byte
	// Dir holds the processes' files and logs (etcd.log, apiserver.log).
	Dir string

	etcd, apiserver *exec.Cmd
	// etcdDone and apiserverDone receive each process's exit; a receiver
	// puts the value back so the next one sees it too.
	etcdDone, apiserverDone chan error
	// apiserverArgs start the API server again after StopAPIServer, on the
	// same port and with the same certificates, so clients reconnect.
	apiserverArgs []string
	// shmDir is etcd's data directory; outside Dir when it is in /dev/shm,
	// so Stop removes it.
	shmDir string
}

// Start runs a control plane whose files live in dir, which the caller
// removes after Stop.
func Start(dir string) (*ControlPlane, error) {
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf(missingHelp, bin)
		}
	}
	cp := &ControlPlane{Dir: dir, Token: randomToken()}
	if err := cp.start(); err != nil {
		cp.Stop()
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) start() error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	etcdPeer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	// etcd's data lives in memory when /dev/shm exists: fsync on a shared
	// disk is what makes a test control plane slow.
	dataDir := filepath.Join(cp.Dir, "etcd")
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "testk8s-etcd-"); err == nil {
			dataDir = d
		}
	}
	cp.etcd, cp.etcdDone, err = cp.run("etcd", filepath.Join(cp.Dir, "etcd.log"),
		"--name", "testk8s",
		"--data-dir", dataDir,
		"--listen-client-urls", etcdClient,
		"--advertise-client-urls", etcdClient,
		"--listen-peer-urls", etcdPeer,
		"--initial-advertise-peer-urls", etcdPeer,
		"--initial-cluster", "testk8s="+etcdPeer,
		"--unsafe-no-fsync",
		"--log-level", "warn",
	)
	if err != nil {
		return err
	}
	cp.shmDir = dataDir

	saKey := filepath.Join(cp.Dir, "sa.key")
	saPub := filepath.Join(cp.Dir, "sa.pub")
	if err := writeServiceAccountKeys(saKey, saPub); err != nil {
		return err
	}
	tokens := filepath.Join(cp.Dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(cp.Token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	certDir := filepath.Join(cp.Dir, "certs")
	port := ports[2]
	cp.apiserverArgs = []string{
		"--etcd-servers", etcdClient,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(port),
		"--cert-dir", certDir,
		"--token-auth-file", tokens,
		"--authorization-mode", "RBAC",
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saPub,
		"--service-account-signing-key-file", saKey,
		"--disable-admission-plugins", "ServiceAccount",
		"--endpoint-reconciler-type", "none",
		"--allow-privileged=true",
	}
	cp.Host = "https://127.0.0.1:" + strconv.Itoa(port)
	return cp.StartAPIServer()
}

// StopAPIServer kills the API server (etcd keeps running, so no state is
// lost), the way a control-plane upgrade or a crash looks to clients:
// their connections break and new ones are refused.
func (cp *ControlPlane) StopAPIServer() {
	if cp.apiserver == nil {
		return
	}
	_ = syscall.Kill(-cp.apiserver.Process.Pid, syscall.SIGKILL)
	err := <-cp.apiserverDone
	cp.apiserverDone <- err
	cp.apiserver, cp.apiserverDone = nil, nil
}

// StartAPIServer starts the API server, again after StopAPIServer, on the
// same address and with the same serving certificate, and waits until it
// is ready.
func (cp *ControlPlane) StartAPIServer() error {
	if cp.apiserver != nil {
		return errors.New("testk8s: the API server is already running")
	}
	logPath := filepath.Join(cp.Dir, "apiserver.log")
	var err error
	cp.apiserver, cp.apiserverDone, err = cp.run("kube-apiserver", logPath, cp.apiserverArgs...)
	if err != nil {
		return err
	}
	return cp.waitReady(filepath.Join(cp.Dir, "certs"))
}

// run starts bin with its output in logPath. One goroutine per process
// waits for its exit; Stop ends it.
func (cp *ControlPlane) run(bin, logPath string, args ...string) (*exec.Cmd, chan error, error) {
	// Appended, so that a restarted process's log follows the first's.
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, and killed if the test binary dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	return cmd, done, nil
}

func (cp *ControlPlane) waitReady(certDir string) error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		for _, w := range []chan error{cp.etcdDone, cp.apiserverDone} {
			select {
			case err := <-w:
				w <- err
				return fmt.Errorf("a control-plane process exited during start (%w); logs in %s", err, cp.Dir)
			default:
			}
		}
		if cp.CAData == nil {
			// kube-apiserver writes its self-signed serving certificate
			// before it listens.
			if b, err := os.ReadFile(filepath.Join(certDir, "apiserver.crt")); err == nil {
				cp.CAData = b
			}
		}
		if cp.CAData != nil {
			if last = cp.ping(); last == nil {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if last == nil {
		last = errors.New("it wrote no serving certificate")
	}
	return fmt.Errorf("kube-apiserver not ready after %s: %w; logs in %s", startTimeout, last, cp.Dir)
}

func (cp *ControlPlane) ping() error {
	c, err := cp.HTTPClient()
	if err != nil {
		return err
	}
	// No connection outlives the probe: a test checking for leaked
	// goroutines may restart the API server.
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cp.Host+"/readyz", nil)
	req.Header.Set("Authorization", "Bearer "+cp.Token)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s", resp.Status)
	}
	return nil
}

// HTTPClient trusts the API server's certificate; requests still need
// the bearer token.
func (cp *ControlPlane) HTTPClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cp.CAData) {
		return nil, errors.New("testk8s: no certificate in the API server's cert file")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}}, nil
}

// Kubeconfig writes a kubeconfig file for the admin token and returns its
// path, for clients that load one (client-go's clientcmd, kubectl).
func (cp *ControlPlane) Kubeconfig() (string, error) {
	ca := filepath.Join(cp.Dir, "ca.crt")
	if err := os.WriteFile(ca, cp.CAData, 0o600); err != nil {
		return "", err
	}
	path := filepath.Join(cp.Dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q, tls-server-name: 127.0.0.1}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, cp.Host, ca, cp.Token)
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// Stop kills both processes and waits for them.
func (cp *ControlPlane) Stop() {
	for _, c := range []*exec.Cmd{cp.apiserver, cp.etcd} {
		if c != nil && c.Process != nil {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		}
	}
	for _, w := range []chan error{cp.apiserverDone, cp.etcdDone} {
		if w != nil {
			<-w
		}
	}
	cp.apiserver, cp.etcd = nil, nil
	cp.apiserverDone, cp.etcdDone = nil, nil
	if cp.shmDir != "" {
		_ = os.RemoveAll(cp.shmDir)
	}
}

func writeServiceAccountKeys(keyPath, pubPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return strings.ToLower(fmt.Sprintf("%x", b))
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
