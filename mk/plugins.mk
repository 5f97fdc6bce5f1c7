# plugins: the benchmark of an empty plugin chain against five built-ins (see
# docs/plugins.md "Cost"), and the example out-of-tree plugin module, which
# `go test ./...` at the root does not reach (it is a module of its own).
.PHONY: bench-plugins test-example-plugin

bench-plugins:
	$(GO) test -run '^$$' -bench 'BenchmarkChain' -benchmem -count=5 ./plugins/standard/
	$(GO) test -run '^$$' -bench 'BenchmarkCompress' -benchmem -count=2 ./plugins/compress/

test-example-plugin:
	cd examples/plugins/routeinfo && $(GO) vet ./... && $(GO) test -race -count=1 ./...
