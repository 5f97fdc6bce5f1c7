package gateway

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

func promRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// named is a handler that only says which route it is.
type named string

func (n named) ServeHTTP(http.ResponseWriter, *http.Request) {}
