package edgetls

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkCacheDir reports whether dir can serve as the ACME cache without
// creating anything: it is a directory the process can write, or the
// nearest part of its path that exists is one, so that the cache's first
// write can make the rest. What used to be found by creating the directory
// at load (a path through a regular file, a read-only parent) is found
// here, and a file that is refused or only validated leaves nothing on
// disk.
func checkCacheDir(dir string) error {
	p := filepath.Clean(dir)
	for {
		fi, err := os.Stat(p)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("%s: %s is not a directory", dir, p)
		case err == nil:
			if err := writable(p); err != nil {
				if p == filepath.Clean(dir) {
					return fmt.Errorf("%s is not writable: %w", dir, err)
				}
				return fmt.Errorf("%s cannot be created: %s is not writable: %w", dir, p, err)
			}
			return nil
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			// ENOTDIR: a part of the path above is a file, found below.
			return fmt.Errorf("%s: %w", dir, err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("%s: no part of the path exists", dir)
		}
		p = parent
	}
}
