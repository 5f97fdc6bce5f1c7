package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync/atomic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/causewayhq/causeway/routes"
)

// Source is the provider as the edge runs it: the Watcher's snapshots,
// translated, handed to the edge to apply, and the outcome written back
// as the objects' status. It satisfies the edge's RouteSource.
type Source struct {
	cfg  routes.KubernetesProvider
	opts Options
	w    atomic.Pointer[Watcher]
}

// Resync makes the running source translate the cluster again, as if it
// had changed: the edge calls it when its routes file changed, which a
// policy's check depends on.
func (s *Source) Resync() {
	if w := s.w.Load(); w != nil {
		w.poke()
	}
}

// NewSource checks cfg (the kubeconfig is read here, so a bad one refuses
// the routes file that names it) and returns a Source that runs on Run.
func NewSource(cfg routes.KubernetesProvider, opts Options) (*Source, error) {
	if _, err := restConfig(cfg.Kubeconfig, opts.RESTConfig); err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Source{cfg: cfg, opts: opts}, nil
}

// Run watches until ctx ends. Each snapshot is translated; a fragment that
// differs from the last one applied goes to apply, and an unchanged one is
// not applied again (the cluster changed nothing the edge serves: a status
// write, an unrelated Secret). The statuses are written either way; when
// apply refuses the model, every Gateway of ours says Programmed=False
// with the refusal, and the edge keeps serving what it served.
func (s *Source) Run(ctx context.Context, apply func(routes.Fragment) error) error {
	var (
		w       *Watcher
		applied *routes.Fragment
		logged  []LeftOut
	)
	tr := NewTranslator(s.cfg, TranslateOptions{HTTPS: s.opts.HTTPS, Check: s.opts.Check, MeshTrustDomain: s.opts.MeshTrustDomain})
	onSnapshot := func(snap *Snapshot) {
		res := tr.Translate(snap)
		if !slices.Equal(res.LeftOut, logged) {
			// A pod left out is one the route will miss; logged when that
			// changes, so a steady cluster says it once.
			for _, l := range res.LeftOut {
				s.opts.Logger.Warn("kubernetes provider: mesh endpoint left out", "what", l.String())
			}
			logged = res.LeftOut
		}
		if applied == nil || !reflect.DeepEqual(*applied, res.Fragment) {
			if err := apply(res.Fragment); err != nil {
				if ctx.Err() != nil {
					return
				}
				refused(&res, err)
			} else {
				frag := res.Fragment
				applied = &frag
			}
		}
		w.SetResult(&res)
	}
	var err error
	if w, err = New(s.cfg, onSnapshot, s.opts); err != nil {
		return err
	}
	s.w.Store(w)
	defer s.w.Store(nil)
	return w.Run(ctx)
}

// refused marks every Gateway of ours not programmed: the model with this
// view of the cluster was refused as a whole, so none of it is served.
func refused(res *Result, err error) {
	msg := "the edge refused the model: " + err.Error()
	if len(msg) > 1024 { // a condition message is at most 32768; keep it readable
		msg = msg[:1021] + "..."
	}
	for k, st := range res.Gateways {
		st.Conditions = slicesReplaceCondition(st.Conditions, metav1.Condition{
			Type: string(gatewayv1.GatewayConditionProgrammed), Status: metav1.ConditionFalse,
			Reason: string(gatewayv1.GatewayReasonInvalid), Message: msg, ObservedGeneration: generationOf(st.Conditions),
		})
		res.Gateways[k] = st
	}
}

func slicesReplaceCondition(conds []metav1.Condition, c metav1.Condition) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(conds)+1)
	for _, x := range conds {
		if x.Type != c.Type {
			out = append(out, x)
		}
	}
	return append(out, c)
}

func generationOf(conds []metav1.Condition) int64 {
	if len(conds) > 0 {
		return conds[0].ObservedGeneration
	}
	return 0
}
