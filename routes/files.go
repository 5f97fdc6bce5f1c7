package routes

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
)

// Options tune how a routes or sidecar file is loaded.
type Options struct {
	// Env expands ${VAR} references; nil: the process environment.
	Env LookupEnv
	// CheckFiles also reports every file the configuration names
	// (certificates, keys, key lists, JWT keys, endpoint lists) that
	// cannot be read, each at its key, together with the file's other
	// errors: one run lists every missing file instead of the first.
	CheckFiles bool
}

func (o Options) env() LookupEnv {
	if o.Env == nil {
		return os.LookupEnv
	}
	return o.Env
}

// namedFile is one file the configuration reads, and the key naming it.
type namedFile struct{ key, path string }

// files lists what the edge reads at load, with paths already resolved
// against the routes file's directory. Directories the edge creates
// (acme.cache_dir) and files it creates (the access log) are not listed.
func (f *File) files() []namedFile {
	var out []namedFile
	add := func(key, path string) {
		if path != "" {
			out = append(out, namedFile{key, path})
		}
	}
	if t := f.TLS; t != nil {
		for i, c := range t.Certificates {
			add(fmt.Sprintf("tls.certificates[%d].cert_file", i), c.CertFile)
			add(fmt.Sprintf("tls.certificates[%d].key_file", i), c.KeyFile)
		}
		add("tls.client_ca_file", t.ClientCAFile)
		if a := t.ACME; a != nil {
			add("tls.acme.ca_roots_file", a.CARootsFile)
		}
	}
	if k := f.Providers.Kubernetes; k != nil {
		add("providers.kubernetes.kubeconfig", k.Kubeconfig)
	}
	if m := f.Mesh; m != nil && m.Source != SourceSPIRE {
		add("mesh.cert_file", m.CertFile)
		add("mesh.key_file", m.KeyFile)
		add("mesh.bundle_file", m.BundleFile)
	}
	for _, name := range slices.Sorted(maps.Keys(f.Authenticators)) {
		a, p := f.Authenticators[name], "authenticators."+name
		if j := a.JWT; j != nil {
			add(p+".jwt.hmac_secret_file", j.HMACSecretFile)
			for i, k := range j.PublicKeyFiles {
				add(fmt.Sprintf("%s.jwt.public_key_files[%d]", p, i), k)
			}
		}
		if k := a.APIKey; k != nil {
			add(p+".api_key.keys_file", k.KeysFile)
		}
		if b := a.Basic; b != nil {
			add(p+".basic.htpasswd_file", b.HtpasswdFile)
		}
		if x := a.ExtAuthz; x != nil {
			add(p+".ext_authz.ca_file", x.CAFile)
		}
		if o := a.OIDC; o != nil {
			add(p+".oidc.private_key_file", o.PrivateKeyFile)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(f.Upstreams)) {
		add("upstreams."+name+".endpoints_file", f.Upstreams[name].EndpointsFile)
		if t := f.Upstreams[name].TLS; t != nil {
			add("upstreams."+name+".tls.ca_file", t.CAFile)
		}
	}
	return out
}

// files lists what the sidecar reads at load.
func (s *Sidecar) files() []namedFile {
	var out []namedFile
	if s.Outbound != nil && s.Outbound.Kubernetes != nil && s.Outbound.Kubernetes.Kubeconfig != "" {
		out = append(out, namedFile{"outbound.kubernetes.kubeconfig", s.Outbound.Kubernetes.Kubeconfig})
	}
	if s.Identity.Source == SourceSPIRE {
		return out
	}
	for _, kv := range []namedFile{{"identity.cert_file", s.Identity.CertFile}, {"identity.key_file", s.Identity.KeyFile}, {"identity.bundle_file", s.Identity.BundleFile}} {
		if kv.path != "" {
			out = append(out, kv)
		}
	}
	return out
}

// checkFiles reports, at its key, each file that cannot be read: missing,
// a directory, or not readable by this process.
func checkFiles(file string, at func(string) Pos, files []namedFile) Errors {
	var errs Errors
	for _, nf := range files {
		if msg := unreadable(nf.path); msg != "" {
			errs = append(errs, &Error{File: file, Pos: at(nf.key), Path: nf.key, Msg: msg})
		}
	}
	return errs
}

func unreadable(path string) string {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file: " + path
	case err != nil:
		return err.Error()
	case st.IsDir():
		return "is a directory, not a file: " + path
	case !st.Mode().IsRegular():
		// A FIFO or device would block or never end; the edge reads
		// these files whole.
		return "not a regular file: " + path
	}
	fh, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return "cannot be read (permission denied): " + path
		}
		return err.Error()
	}
	fh.Close()
	return ""
}
