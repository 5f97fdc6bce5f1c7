// Package testnetns runs a test binary inside a network namespace of its
// own, so that tests can give servers addresses other than loopback (the
// Kubernetes API server refuses loopback addresses in EndpointSlices)
// without touching the machine's network: whatever listens there is
// reachable only from inside.
//
// Main re-executes the test binary under `unshare --net` (root is needed,
// as for any namespace); inside, loopback is up and holds 10.244.0.1/16,
// which makes every address of 10.244.0.0/16 local to the namespace, as a
// pod network would be to its node. A machine where this cannot be done
// fails the package, never skips it.
package testnetns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// envInside marks the re-executed process.
const envInside = "CAUSEWAY_TEST_NETNS"

// Prefix is the network every test address comes from; Addr(n) is one.
const Prefix = "10.244.0.0/16"

// Addr returns the n-th test address (1 <= n < 65535): 10.244.x.y.
func Addr(n int) string {
	return fmt.Sprintf("10.244.%d.%d", n/256, n%256)
}

// Main runs run (a package's tests: m.Run, or a control plane's
// StartMain) in a network namespace of its own and returns the exit code
// for os.Exit. Call it from TestMain.
func Main(run func() int) int {
	if os.Getenv(envInside) == "1" {
		if err := setUp(); err != nil {
			fmt.Fprintf(os.Stderr, "testnetns: %v\n", err)
			return 1
		}
		return run()
	}
	args := append([]string{"--net", "--", os.Args[0]}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), envInside+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return exit.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "testnetns: cannot make a network namespace (unshare --net needs root): %v\n", err)
		return 1
	}
}

func setUp() error {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", "10.244.0.1/16", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
	}
	return nil
}
