package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"

	"github.com/causewayhq/causeway/routes"
	"go.yaml.in/yaml/v3"
)

// Instances is the set of plugin instances of one loaded routes file. The
// gateway builds one per load, chains routes with it, and closes it when a
// reload replaces the file (after the old routes stopped taking requests) or
// the edge stops: an instance's resources live exactly as long as the
// configuration that declared it.
type Instances struct {
	byName map[string]Instance
	// order is the creation order (sorted names), closed in reverse.
	order []string

	closeOnce sync.Once
	closeErr  error
}

// NewInstances creates every instance in f.Plugins. It reports every problem
// at once, as routes.Errors in file order; on error no instance is left
// open.
func NewInstances(ctx context.Context, f *routes.File) (*Instances, error) {
	s := &Instances{byName: make(map[string]Instance, len(f.Plugins))}
	names := make([]string, 0, len(f.Plugins))
	for n := range f.Plugins {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs routes.Errors
	for _, name := range names {
		inst := f.Plugins[name]
		base := "plugins." + name
		if inst.Config.Node == nil {
			// No config: key. Give the factory an empty mapping placed at the
			// instance so its "required" errors still name a line.
			pos := f.At(base)
			inst.Config = routes.Raw{
				Node: &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: pos.Line, Column: pos.Col},
				File: f.Path,
				Path: base + ".config",
			}
		}
		at := &routes.Error{File: f.Path, Pos: f.At(base + ".use"), Path: base + ".use"}
		i, err := newInstance(ctx, name, inst, at)
		if err != nil {
			var es routes.Errors
			if errors.As(err, &es) {
				errs = append(errs, es...)
			} else {
				errs = append(errs, &routes.Error{File: f.Path, Pos: f.At(base), Path: base, Msg: err.Error()})
			}
			continue
		}
		s.byName[name] = i
		s.order = append(s.order, name)
	}
	if len(errs) > 0 {
		// The instances that did build belong to a file that will not run.
		if cerr := s.Close(); cerr != nil {
			errs = append(errs, &routes.Error{File: f.Path, Pos: f.At("plugins"), Path: "plugins", Msg: fmt.Sprintf("releasing instances of the refused file: %v", cerr)})
		}
		sort.SliceStable(errs, func(i, j int) bool {
			if errs[i].Pos.Line != errs[j].Pos.Line {
				return errs[i].Pos.Line < errs[j].Pos.Line
			}
			return errs[i].Pos.Col < errs[j].Pos.Col
		})
		return nil, errs
	}
	return s, nil
}

// Get returns the instance called name.
func (s *Instances) Get(name string) (Instance, bool) {
	i, ok := s.byName[name]
	return i, ok
}

// Names returns the instance names, sorted.
func (s *Instances) Names() []string {
	return append([]string(nil), s.order...)
}

// Chain returns the middleware running the named instances in order: the
// first name sees the request first and the response last. An empty list
// gives the identity function, so a route without plugins costs nothing.
func (s *Instances) Chain(names []string) (func(http.Handler) http.Handler, error) {
	return s.chain(names, func(Instance) bool { return true })
}

// ChainPhase is Chain with only the instances of names that run in phase,
// in the route's order; nil (and no error) when none of them does. The
// gateway places each phase's chain at its point in the route.
func (s *Instances) ChainPhase(names []string, phase Phase) (func(http.Handler) http.Handler, error) {
	n := 0
	for _, name := range names {
		if inst, ok := s.byName[name]; ok && PhaseOf(inst) == phase {
			n++
		}
	}
	if n == 0 {
		// Still report an undefined name.
		_, err := s.chain(names, func(Instance) bool { return false })
		return nil, err
	}
	return s.chain(names, func(i Instance) bool { return PhaseOf(i) == phase })
}

func (s *Instances) chain(names []string, keep func(Instance) bool) (func(http.Handler) http.Handler, error) {
	chain := make([]Instance, 0, len(names))
	for _, n := range names {
		inst, ok := s.byName[n]
		if !ok {
			return nil, fmt.Errorf("plugins: undefined plugin instance %q", n)
		}
		if keep(inst) {
			chain = append(chain, inst)
		}
	}
	if len(chain) == 0 {
		return func(h http.Handler) http.Handler { return h }, nil
	}
	return func(h http.Handler) http.Handler {
		for i := len(chain) - 1; i >= 0; i-- {
			h = chain[i].Wrap(h)
		}
		return h
	}, nil
}

// Close closes every instance that is an io.Closer, in reverse creation
// order, and returns their errors joined. Calling it again returns the same
// result without closing anything twice.
func (s *Instances) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for i := len(s.order) - 1; i >= 0; i-- {
			name := s.order[i]
			c, ok := s.byName[name].(io.Closer)
			if !ok {
				continue
			}
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing plugin instance %q: %w", name, err))
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
