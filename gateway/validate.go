package gateway

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causewayhq/causeway/routes"
)

// Validate loads the routes file and builds everything the edge would build
// from it (authenticators, plugin instances, upstream pools), without binding
// a listener, then releases it all. It finds what routes.Load alone cannot:
// a plugin's bad config, an unreadable key file.
func Validate(ctx context.Context, path string) error {
	_, err := Check(ctx, path)
	return err
}

// Check is Validate that also returns the warnings of an accepted file
// (routes.File.Warnings): footguns such as an admin listener open to other
// hosts without a token.
func Check(ctx context.Context, path string) (routes.Errors, error) {
	e, err := NewEdge(ctx, EdgeOptions{
		ConfigPath: path,
		Logger:     slog.New(slog.DiscardHandler),
		Registry:   prometheus.NewRegistry(),
		checkOnly:  true,
	})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active.cfg.Warnings, nil
}
