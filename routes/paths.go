package routes

import "path/filepath"

// resolvePaths makes the file paths in f relative to the routes file's own
// directory, not to the edge's working directory: a routes file and the
// certificates and key files beside it (a ConfigMap, a checkout) then work
// from wherever the edge is started. Absolute paths are kept.
func (f *File) resolvePaths() {
	dir := filepath.Dir(f.Path)
	if f.Path == "" || dir == "." {
		return
	}
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if t := f.TLS; t != nil {
		rel(&t.ClientCAFile)
		for i := range t.Certificates {
			rel(&t.Certificates[i].CertFile)
			rel(&t.Certificates[i].KeyFile)
		}
		if a := t.ACME; a != nil {
			rel(&a.CacheDir)
			rel(&a.CARootsFile)
		}
	}
	if k := f.Providers.Kubernetes; k != nil {
		rel(&k.Kubeconfig)
	}
	if m := f.Mesh; m != nil {
		rel(&m.CertFile)
		rel(&m.KeyFile)
		rel(&m.BundleFile)
		for td, p := range m.FederatedBundles {
			rel(&p)
			m.FederatedBundles[td] = p
		}
	}
	for name, a := range f.Authenticators {
		if j := a.JWT; j != nil {
			rel(&j.HMACSecretFile)
			for i := range j.PublicKeyFiles {
				rel(&j.PublicKeyFiles[i])
			}
		}
		if k := a.APIKey; k != nil {
			rel(&k.KeysFile)
		}
		if b := a.Basic; b != nil {
			rel(&b.HtpasswdFile)
		}
		if x := a.ExtAuthz; x != nil {
			rel(&x.CAFile)
		}
		if o := a.OIDC; o != nil {
			rel(&o.PrivateKeyFile)
		}
		f.Authenticators[name] = a
	}
	for name, u := range f.Upstreams {
		rel(&u.EndpointsFile)
		if u.TLS != nil {
			t := *u.TLS // the decoded file's own, but copied before changing as the rest is
			rel(&t.CAFile)
			u.TLS = &t
		}
		f.Upstreams[name] = u
	}
	switch f.AccessLog.Output {
	case "", "stdout", "stderr", "off":
	default:
		rel(&f.AccessLog.Output)
	}
}

// resolvePaths makes the sidecar file's paths relative to its own directory.
func (s *Sidecar) resolvePaths() {
	dir := filepath.Dir(s.Path)
	if s.Path == "" || dir == "." {
		return
	}
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for _, p := range []*string{&s.Identity.CertFile, &s.Identity.KeyFile, &s.Identity.BundleFile} {
		rel(p)
	}
	if s.Outbound != nil && s.Outbound.Kubernetes != nil {
		rel(&s.Outbound.Kubernetes.Kubeconfig)
	}
	for td, p := range s.Identity.FederatedBundles {
		rel(&p)
		s.Identity.FederatedBundles[td] = p
	}
	switch o := s.AccessLog.Output; o {
	case "", "stdout", "stderr", "off":
	default:
		if !filepath.IsAbs(o) {
			s.AccessLog.Output = filepath.Join(dir, o)
		}
	}
}
