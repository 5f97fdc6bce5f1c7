// Package memlimit finds the memory limit of the cgroup a process runs in,
// so that a Go program in a container can give its garbage collector a
// soft limit below the point where the kernel would kill it.
package memlimit

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// unlimited is at or above what cgroup v1 reports for "no limit"
// (PAGE_COUNTER_MAX in bytes, rounded to the page size).
const unlimited = int64(1) << 62

// FromCgroup returns the smallest memory limit set on the process's cgroup
// or any of its ancestors, in bytes; 0 when there is none (no cgroup, or
// "max"). root is "/" outside tests: it holds proc/self/cgroup and
// sys/fs/cgroup. cgroup v2 (memory.max) is read first, then v1
// (memory.limit_in_bytes of the memory controller).
func FromCgroup(root string) (int64, error) {
	f, err := os.Open(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil // not Linux, or no /proc
		}
		return 0, fmt.Errorf("memlimit: %w", err)
	}
	defer f.Close()
	var v2Path, v1Path string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2Path = parts[2]
		case hasController(parts[1], "memory"):
			v1Path = parts[2]
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("memlimit: reading /proc/self/cgroup: %w", err)
	}
	cg := filepath.Join(root, "sys/fs/cgroup")
	if v2Path != "" {
		if limit, found, err := smallest(cg, v2Path, "memory.max"); err != nil || found {
			return limit, err
		}
	}
	if v1Path != "" {
		limit, _, err := smallest(filepath.Join(cg, "memory"), v1Path, "memory.limit_in_bytes")
		return limit, err
	}
	return 0, nil
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// smallest walks from dir/path up to dir and returns the smallest finite
// limit in file; found says whether any such file existed.
func smallest(dir, path, file string) (limit int64, found bool, err error) {
	p := filepath.Clean("/" + path)
	for {
		b, rerr := os.ReadFile(filepath.Join(dir, p, file))
		switch {
		case rerr == nil:
			found = true
			s := strings.TrimSpace(string(b))
			if s != "max" {
				n, perr := strconv.ParseInt(s, 10, 64)
				if perr != nil {
					return 0, found, fmt.Errorf("memlimit: %s: %q is not a number of bytes", filepath.Join(dir, p, file), s)
				}
				if n > 0 && n < unlimited && (limit == 0 || n < limit) {
					limit = n
				}
			}
		case !errors.Is(rerr, fs.ErrNotExist):
			return 0, found, fmt.Errorf("memlimit: %w", rerr)
		}
		if p == "/" {
			return limit, found, nil
		}
		p = filepath.Dir(p)
	}
}
