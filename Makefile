# Two commands do everything on a fresh machine: `make demo` and `make test`.
GO ?= go
PKGS := ./...

.PHONY: all build test unit e2e tools demo demo-down bench bench-smoke fmt vet clean

all: build

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -ldflags "-X github.com/clusterconnect/clusterconnect/pkg/version.Version=$(VERSION)" -o bin/ ./cmd/...

# etcd and kube-apiserver, built once from the Go module proxy and cached
# outside the tree (~/.cache/clusterconnect/tools).
tools:
	@hack/tools.sh >/dev/null

vet:
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || { echo "gofmt needed on the files above" >&2; exit 1; }
	$(GO) vet $(PKGS)

# Everything, with the race detector: unit tests, the real-process tests
# (etcd, kube-apiserver, kubectl, relay, agent) and the benchmark smoke run.
test: tools vet
	$(GO) test -race -count=1 -timeout 30m $(PKGS)
	$(MAKE) bench-smoke

# Everything but the real-process end-to-end suites under test/e2e.
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/e2e)

e2e: tools
	$(GO) test -race -count=1 -timeout 20m ./test/e2e/...

demo:
	@hack/demo.sh up

demo-down:
	@hack/demo.sh down

# bench/ is its own module (its peers, e.g. rancher/remotedialer, stay out of
# the main go.mod). `make bench` prints the side-by-side table and writes
# bench/results/latest.{json,md}; see docs/performance.md.
bench:
	cd bench && $(GO) test -count=1 -timeout 80m -run '^TestReport$$' -report

# Proves the benchmark harness runs; never gates on speed.
bench-smoke:
	cd bench && $(GO) vet ./... && $(GO) test -count=1 -run '^TestSmoke$$' -bench . -benchtime 1x ./...

clean:
	rm -rf bin .demo
