package gateway

import (
	"context"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Validate loads the routes file and builds everything the edge would build
// from it (authenticators, plugin instances, upstream pools), without binding
// a listener, then releases it all. It finds what routes.Load alone cannot:
// a plugin's bad config, an unreadable key file.
func Validate(ctx context.Context, path string) error {
	e, err := NewEdge(ctx, EdgeOptions{
		ConfigPath: path,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry:   prometheus.NewRegistry(),
	})
	if err != nil {
		return err
	}
	e.Close()
	return nil
}
