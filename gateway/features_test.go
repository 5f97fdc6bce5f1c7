package gateway

import (
	"net/http"
	"slices"
	"testing"

	"github.com/causewayhq/causeway/routes"
)

// The chain's order comes from chainOrder alone, whatever order the
// features contribute in; a stage without a place, or two features filling
// one place, is refused at once.
func TestOrderStages(t *testing.T) {
	named := func(n string) Stage {
		return namedStage{n, stageFunc(func(routes.Route) (func(http.Handler) http.Handler, error) { return nil, nil })}
	}
	names := func(stages []Stage) []string {
		var out []string
		for _, s := range stages {
			out = append(out, s.(namedStage).name)
		}
		return out
	}
	got := names(orderStages([]map[string]Stage{
		{stagePlugins: named("plugins"), stagePluginsBeforeAuth: named("before")},
		{stageRateLimit: named("ratelimit")},
		nil,
		{stageAuth: named("auth")},
		{stageTracing: named("tracing")},
	}))
	if want := []string{"tracing", "before", "auth", "ratelimit", "plugins"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if got := orderStages([]map[string]Stage{{stageAuth: named("auth")}}); len(got) != 1 {
		t.Fatalf("a lone stage: %v", got)
	}
	for name, contributed := range map[string][]map[string]Stage{
		"duplicate": {{stageAuth: named("a")}, {stageAuth: named("b")}},
		"unplaced":  {{"compression": named("c")}},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			orderStages(contributed)
		})
	}
}
