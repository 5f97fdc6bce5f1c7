package testredis

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServer(t *testing.T) {
	s := Start(t)
	tests := []struct {
		desc string
		args []string
		want string
	}{
		{"ping answers PONG", []string{"PING"}, "PONG"},
		{"set is acknowledged", []string{"SET", "k", "v"}, "OK"},
		{"get returns the bulk value", []string{"GET", "k"}, "v"},
		{"integers come back in decimal", []string{"INCR", "n"}, "1"},
		{"persistence is off", []string{"CONFIG", "GET", "save"}, "save\n"},
		{"appendonly is off", []string{"CONFIG", "GET", "appendonly"}, "appendonly\nno"},
		{"bound to loopback only", []string{"CONFIG", "GET", "bind"}, "bind\n127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := s.Do(tc.args...)
			if err != nil {
				t.Fatalf("%v: %v", tc.args, err)
			}
			if got != tc.want {
				t.Fatalf("%v = %q, want %q", tc.args, got, tc.want)
			}
		})
	}
	if _, err := s.Do("NOSUCHCOMMAND"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("an error reply must come back as an error, got %v", err)
	}
}

func TestStopRestartKeepsAddress(t *testing.T) {
	s := Start(t)
	addr := s.Addr
	if _, err := s.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("a stopped server still answers")
	}
	s.Stop() // a second Stop is a no-op
	s.Restart()
	if s.Addr != addr {
		t.Fatalf("address moved from %s to %s", addr, s.Addr)
	}
	got, err := s.Do("GET", "k")
	if err != nil {
		t.Fatal(err)
	}
	if got != "" {
		t.Fatalf("a restarted server must start empty (persistence is off), got k=%q", got)
	}
}

func TestPauseResume(t *testing.T) {
	s := Start(t)
	s.Pause()
	// Do's own deadline turns a frozen server into an error rather than a hang.
	if _, err := DoTimeout(s.Addr, 200*time.Millisecond, "PING"); err == nil {
		t.Fatal("a paused server answered")
	}
	s.Resume()
	if got, err := s.Do("PING"); err != nil || got != "PONG" {
		t.Fatalf("after Resume: %q, %v", got, err)
	}
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("forming a cluster takes seconds")
	}
	c := StartCluster(t)
	if len(c.Addrs()) != 3 {
		t.Fatalf("want 3 nodes, got %v", c.Addrs())
	}
	for _, n := range c.Nodes {
		info, err := n.Do("CLUSTER", "INFO")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"cluster_state:ok", "cluster_known_nodes:3", "cluster_size:3"} {
			if !strings.Contains(info, want) {
				t.Errorf("%s: CLUSTER INFO lacks %q:\n%s", n.Addr, want, info)
			}
		}
	}
}

// TestMissingBinaryFails checks the helper fails, rather than skips, when
// redis-server is not installed, and says how to install it.
func TestMissingBinaryFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(rec)
	}()
	<-done
	if !rec.failed || rec.skipped {
		t.Fatalf("failed=%v skipped=%v, want a failure", rec.failed, rec.skipped)
	}
	if !strings.Contains(rec.msg, "make deps") || !strings.Contains(rec.msg, "redis-server") {
		t.Fatalf("message %q should name redis-server and `make deps`", rec.msg)
	}
}

// recorder captures Fatalf/Skip without failing the real test. Fatalf ends
// the goroutine like testing's own FailNow does.
type recorder struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = true
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Skip(args ...any)                 { r.skipped = true; runtime.Goexit() }
func (r *recorder) Skipf(format string, args ...any) { r.skipped = true; runtime.Goexit() }
func (r *recorder) SkipNow()                         { r.skipped = true; runtime.Goexit() }

func TestSentinel(t *testing.T) {
	master := Start(t)
	s := StartSentinel(t, master, "main")
	got, err := s.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "main")
	if err != nil {
		t.Fatal(err)
	}
	if want := "127.0.0.1\n" + strconv.Itoa(master.Port); got != want {
		t.Fatalf("sentinel reports %q, want %q", got, want)
	}
}
