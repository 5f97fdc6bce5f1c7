package testk8s

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// StartMain is a package's TestMain: it starts one control plane for all
// the package's tests, stores it in *cp, runs setup (installing CRDs, for
// example), runs the tests and stops it. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testk8s.StartMain(m, &cp, nil)) }
//
// A control plane that does not start fails the package (exit code 1), so a
// machine without the binaries never reports green.
func StartMain(m *testing.M, cp **ControlPlane, setup func(*ControlPlane) error) int {
	dir, err := os.MkdirTemp("", "testk8s-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testk8s:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	c, err := Start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testk8s:", err)
		return 1
	}
	defer c.Stop()
	if setup != nil {
		if err := setup(c); err != nil {
			fmt.Fprintln(os.Stderr, "testk8s: setup:", err)
			return 1
		}
	}
	*cp = c
	return m.Run()
}

// InstallGatewayAPI installs the CRDs the Kubernetes provider watches:
// the Gateway API's standard channel, from the module the edge is built
// with, and Causeway's own (examples/kubernetes/gateway-api/crd).
func (cp *ControlPlane) InstallGatewayAPI() error {
	dirs := map[string]string{}
	for _, mod := range []string{"sigs.k8s.io/gateway-api", "github.com/causewayhq/causeway"} {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mod).Output()
		if err != nil {
			return fmt.Errorf("locating the %s module: %w", mod, err)
		}
		dirs[mod] = strings.TrimSpace(string(out))
	}
	if err := cp.InstallCRDs(filepath.Join(dirs["sigs.k8s.io/gateway-api"], "config", "crd", "standard")); err != nil {
		return err
	}
	return cp.InstallCRDs(filepath.Join(dirs["github.com/causewayhq/causeway"], "examples", "kubernetes", "gateway-api", "crd"))
}

// crdEstablishTimeout bounds the wait for CRDs to be served; they are
// Established within about 2 s.
const crdEstablishTimeout = 60 * time.Second

// InstallCRDs creates every CustomResourceDefinition in the *.yaml files
// of dir (other kinds in those files, such as a ValidatingAdmissionPolicy,
// are skipped) and waits until each is Established and each served
// version answers a list (Established comes a moment before the storage
// is ready, when requests get 429), so objects of its kinds can be
// created at once. A CRD that already exists is left as it is.
func (cp *ControlPlane) InstallCRDs(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	var crds []crdDoc
	for _, f := range files {
		docs, err := crdDocuments(f)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for _, d := range docs {
			if err := cp.createCRD(d.json); err != nil {
				return fmt.Errorf("%s: CRD %s: %w", f, d.name, err)
			}
			crds = append(crds, d)
		}
	}
	if len(crds) == 0 {
		return fmt.Errorf("no CustomResourceDefinition in %s/*.yaml", dir)
	}
	deadline := time.Now().Add(crdEstablishTimeout)
	for _, d := range crds {
		for {
			ok, err := cp.crdEstablished(d.name)
			if err != nil {
				return fmt.Errorf("CRD %s: %w", d.name, err)
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRD %s not Established after %s", d.name, crdEstablishTimeout)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, path := range d.lists {
			for {
				code, body, err := cp.do(http.MethodGet, path, nil)
				if err != nil {
					return fmt.Errorf("CRD %s: %w", d.name, err)
				}
				if code == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("CRD %s: %s not served after %s: %d %.300s", d.name, path, crdEstablishTimeout, code, body)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	return nil
}

type crdDoc struct {
	name string
	json []byte
	// lists are the list paths of the served versions.
	lists []string
}

func crdDocuments(path string) ([]crdDoc, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 64<<10)
	var out []crdDoc
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Plural string `json:"plural"`
				} `json:"names"`
				Versions []struct {
					Name   string `json:"name"`
					Served bool   `json:"served"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if len(raw) == 0 || json.Unmarshal(raw, &head) != nil || head.Kind != "CustomResourceDefinition" {
			continue
		}
		d := crdDoc{name: head.Metadata.Name, json: raw}
		for _, v := range head.Spec.Versions {
			if v.Served {
				d.lists = append(d.lists, "/apis/"+head.Spec.Group+"/"+v.Name+"/"+head.Spec.Names.Plural)
			}
		}
		out = append(out, d)
	}
}

const crdPath = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

func (cp *ControlPlane) createCRD(body []byte) error {
	code, msg, err := cp.do(http.MethodPost, crdPath, body)
	if err != nil {
		return err
	}
	if code != http.StatusCreated && code != http.StatusConflict {
		return fmt.Errorf("create: %d %.300s", code, msg)
	}
	return nil
}

func (cp *ControlPlane) crdEstablished(name string) (bool, error) {
	code, body, err := cp.do(http.MethodGet, crdPath+"/"+name, nil)
	if err != nil {
		return false, err
	}
	if code != http.StatusOK {
		return false, fmt.Errorf("get: %d %.300s", code, body)
	}
	var crd struct {
		Status struct {
			Conditions []struct{ Type, Status string } `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &crd); err != nil {
		return false, err
	}
	for _, c := range crd.Status.Conditions {
		if c.Type == "Established" && c.Status == "True" {
			return true, nil
		}
	}
	return false, nil
}

// do sends one request as the admin.
func (cp *ControlPlane) do(method, path string, body []byte) (int, []byte, error) {
	c, err := cp.HTTPClient()
	if err != nil {
		return 0, nil, err
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, cp.Host+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+cp.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
