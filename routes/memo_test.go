package routes

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestRouteEqualCoversEveryField changes each field of a route in turn,
// down to those of its match and split targets: Equal must see every
// change, or a MergeMemo would take a changed route for a known one. A
// field added to the types without a place in Equal fails here.
func TestRouteEqualCoversEveryField(t *testing.T) {
	base := Route{Name: "r", Match: Match{Host: "h", Path: "/p", PathPrefix: "/pp", PathRegex: "x", Methods: []string{"GET"},
		Headers: map[string]string{"A": "1"}, Query: map[string]string{"q": "1"}, HeadersRegex: map[string]string{"B": "x"},
		QueryRegex: map[string]string{"r": "x"}},
		Auth: StringList{"a"}, RequireClaims: map[string]string{"c": "1"}, RateLimit: StringList{"l"}, Plugins: []string{"p"},
		Upstream: "u", Split: []SplitTarget{{Upstream: "s", Weight: 1, Headers: map[string]string{"H": "1"}}},
		Timeout: Duration(time.Second), HostRewrite: "h2"}
	if !base.Equal(base.clone()) {
		t.Fatal("a route is not equal to its copy")
	}
	// A leaf is reached by field indexes; -1 is element 0 of a slice of
	// structs (copied first, so base keeps its own).
	var leaves [][]int
	var names []string
	var collect func(tp reflect.Type, path []int, name string)
	collect = func(tp reflect.Type, path []int, name string) {
		switch {
		case tp.Kind() == reflect.Struct:
			for i := range tp.NumField() {
				collect(tp.Field(i).Type, append(slices.Clone(path), i), name+"."+tp.Field(i).Name)
			}
		case tp.Kind() == reflect.Slice && tp.Elem().Kind() == reflect.Struct:
			collect(tp.Elem(), append(slices.Clone(path), -1), name+"[0]")
		default:
			leaves, names = append(leaves, path), append(names, name)
		}
	}
	collect(reflect.TypeFor[Route](), nil, "Route")
	changed := 0
	for n, path := range leaves {
		t.Run(names[n], func(t *testing.T) {
			r := base.clone()
			f := reflect.ValueOf(&r).Elem()
			for _, i := range path {
				if i >= 0 {
					f = f.Field(i)
					continue
				}
				c := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
				reflect.Copy(c, f)
				f.Set(c)
				f = f.Index(0)
			}
			switch f.Kind() {
			case reflect.String:
				f.SetString(f.String() + "x")
			case reflect.Bool:
				f.SetBool(!f.Bool())
			case reflect.Int, reflect.Int64:
				f.SetInt(f.Int() + 1)
			case reflect.Slice:
				f.Set(reflect.Append(f, reflect.ValueOf("x").Convert(f.Type().Elem())))
			case reflect.Map:
				m := reflect.MakeMap(f.Type())
				m.SetMapIndex(reflect.ValueOf("k"), reflect.ValueOf("v"))
				f.Set(m)
			default:
				t.Fatalf("a field of kind %s: teach Equal and this test about it", f.Kind())
			}
			if base.Equal(r) || r.Equal(base) {
				t.Fatalf("Equal misses a change of %s", names[n])
			}
			changed++
		})
	}
	if changed < 20 {
		t.Fatalf("only %d fields changed", changed)
	}
}

// TestMergeWithMemoSameAsMerge merges random sequences of fragments (routes
// added, removed, moved and changed, some invalid alone, some invalid
// against the model: undefined upstreams, duplicate names, ambiguous or
// shadowed matches, underscore headers; upstreams removed under their
// routes) with one MergeMemo, and each fragment alone without: the
// merged models, warnings and errors must be the same.
func TestMergeWithMemoSameAsMerge(t *testing.T) {
	f, err := Parse("dir/t.yaml", []byte(base+"providers:\n  kubernetes: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	no := 0
	// route is a valid route, or (one in four) one with a flaw of its
	// own or against the model.
	route := func() Route {
		no++
		r := Route{Name: fmt.Sprintf("k8s.r%d", no), Upstream: pick("k8s.u0", "k8s.u1", "k8s.u2"),
			Match: Match{Host: pick("", "a.example", "B.example"), PathPrefix: fmt.Sprintf("/p%d/", rng.IntN(no+3))}}
		switch rng.IntN(6) {
		case 0:
			r.Match.Methods = []string{pick("get", "POST")}
		case 1:
			r.Match.Headers = map[string]string{"X-A": "1"}
		case 2:
			r.HostRewrite = "ok.example"
		case 3:
			r.Upstream, r.Split = "", []SplitTarget{{Upstream: "k8s.u0", Weight: 1}, {Upstream: "k8s.u1", Weight: 1, Headers: map[string]string{"X-C": "1"}}}
		case 4:
			r.StripPrefix = true
		}
		if rng.IntN(4) != 0 {
			return r
		}
		switch rng.IntN(9) {
		case 0:
			r.Match.Host = "bad host"
		case 1:
			r.Match.Methods = []string{"G E T"}
		case 2:
			r.Match.Headers = map[string]string{"X_A": "1"}
		case 3:
			r.HostRewrite = "Not Ok"
		case 4:
			r.Upstream, r.Split = "", []SplitTarget{{Upstream: "k8s.u0", Weight: 0}, {Upstream: "k8s.gone", Weight: 1, Headers: map[string]string{"X_C": "1"}}}
		case 5:
			r.Name = pick("k8s.r1", "bad name!")
		case 6:
			r.StripPrefix, r.Match.PathPrefix = true, ""
		case 7:
			r.RequireClaims = map[string]string{"sub": "x"}
		default:
			r.Upstream = "k8s.nowhere"
		}
		return r
	}
	frag := Fragment{Upstreams: map[string]Upstream{"k8s.u0": {Endpoints: []string{"10.0.0.1:80"}}, "k8s.u1": {}, "k8s.u2": {}}}
	for len(frag.Routes) < 6 {
		// A first model that is accepted.
		try := frag
		try.Routes = append(slices.Clone(frag.Routes), route())
		if _, err := f.Merge(try); err == nil {
			frag = try
		}
	}
	var memo MergeMemo
	var lastRefused *Fragment
	accepted, refused := 0, 0
	for step := range 400 {
		next := frag
		next.Routes = slices.Clone(frag.Routes)
		switch rng.IntN(6) {
		case 0:
			next.Routes = append(next.Routes, route())
		case 1:
			if len(next.Routes) > 1 {
				i := rng.IntN(len(next.Routes))
				next.Routes = slices.Delete(next.Routes, i, i+1)
			}
		case 2:
			i, j := rng.IntN(len(next.Routes)), rng.IntN(len(next.Routes))
			next.Routes[i], next.Routes[j] = next.Routes[j], next.Routes[i]
		case 3:
			i := rng.IntN(len(next.Routes))
			r := route()
			r.Name = next.Routes[i].Name
			next.Routes[i] = r
		case 4:
			next.Upstreams = map[string]Upstream{"k8s.u0": {Endpoints: []string{"10.0.0.1:80"}}}
			if rng.IntN(2) == 0 {
				next.Upstreams["k8s.u1"], next.Upstreams["k8s.u2"] = Upstream{}, Upstream{}
			}
		case 5:
			// Unchanged: every route known; or the fragment refused last
			// again, whose flawed route must not pass as known.
			if lastRefused != nil && rng.IntN(2) == 0 {
				next = *lastRefused
			}
		}
		// Each merge gets its own copy, as merging writes defaults into
		// the routes it is given.
		copyOf := func(fr Fragment) Fragment {
			fr.Routes = slices.Clone(fr.Routes)
			for i := range fr.Routes {
				fr.Routes[i] = fr.Routes[i].clone()
			}
			return fr
		}
		want, wantErr := f.Merge(copyOf(next))
		got, gotErr := f.MergeWith(copyOf(next), &memo)
		if fmt.Sprint(wantErr) != fmt.Sprint(gotErr) {
			t.Fatalf("step %d: errors differ\nwithout memo: %v\nwith memo:    %v", step, wantErr, gotErr)
		}
		if wantErr != nil {
			refused++
			lastRefused = &next
			continue
		}
		accepted++
		frag = next
		if !slices.EqualFunc(want.Routes, got.Routes, Route.Equal) || want.Warnings.Error() != got.Warnings.Error() {
			t.Fatalf("step %d: merged models differ\nwithout memo: %v %v\nwith memo:    %v %v", step, want.Routes, want.Warnings, got.Routes, got.Warnings)
		}
	}
	if accepted == 0 || refused == 0 {
		t.Fatalf("%d accepted, %d refused: both must happen", accepted, refused)
	}
	t.Logf("%d accepted, %d refused", accepted, refused)
}
