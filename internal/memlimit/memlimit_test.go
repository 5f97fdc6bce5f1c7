package memlimit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFromCgroup(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string // path under root -> content
		want    int64
		wantErr string
	}{
		{name: "no proc", files: nil, want: 0},
		{name: "v2 limit", files: map[string]string{
			"proc/self/cgroup":                          "0::/kubepods/pod1/c1\n",
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": "536870912\n",
		}, want: 512 << 20},
		{name: "v2 max, limit on the pod", files: map[string]string{
			"proc/self/cgroup":                          "0::/kubepods/pod1/c1\n",
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": "max\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max":    "268435456\n",
		}, want: 256 << 20},
		{name: "v2 namespace root, unlimited", files: map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "max\n",
		}, want: 0},
		{name: "v1 limit", files: map[string]string{
			"proc/self/cgroup": "12:pids:/\n4:memory:/docker/abc\n1:cpu,cpuacct:/\n0::/\n",
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "1073741824\n",
		}, want: 1 << 30},
		{name: "v1 unlimited", files: map[string]string{
			"proc/self/cgroup": "4:memory:/process_api/x\n0::/\n",
			"sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes": "9223372036854771712\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":               "9223372036854771712\n",
		}, want: 0},
		{name: "v1 with combined controllers", files: map[string]string{
			"proc/self/cgroup": "3:cpu,memory:/a\n",
			"sys/fs/cgroup/memory/a/memory.limit_in_bytes": "104857600\n",
		}, want: 100 << 20},
		{name: "garbage", files: map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "lots\n",
		}, wantErr: `"lots" is not a number of bytes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for p, c := range tc.files {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := FromCgroup(root)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// On this machine: whatever the cgroup says, it must parse.
func TestFromCgroupHere(t *testing.T) {
	limit, err := FromCgroup("/")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("memory limit of this process's cgroup: %d bytes (0 = none)", limit)
}
