# Two commands do everything on a fresh machine: `make demo` and `make test`.
GO ?= go
PKGS := ./...

.PHONY: all build test unit e2e tools demo demo-down bench bench-smoke fmt vet clean images

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

# make demo RELAYS=3: a fleet of relay replicas on a three-member etcd cluster.
RELAYS ?= 1

demo:
	@RELAYS=$(RELAYS) hack/demo.sh up

demo-down:
	@hack/demo.sh down

# bench/ is its own module (its peers, e.g. rancher/remotedialer, stay out of
# the main go.mod). `make bench` prints the side-by-side table and writes
# bench/results/latest.{json,md}; see docs/performance.md.
# PROFILE=1 also writes CPU and allocation profiles per contender and measure
# (and the idle hosts' heap profiles) into bench/results/profiles.
bench: tools
	cd bench && $(GO) test -count=1 -timeout 80m -run '^TestReport$$' -report $(if $(PROFILE),-profile results/profiles)

# Proves the benchmark harness runs; never gates on speed.
bench-smoke:
	cd bench && $(GO) vet ./... && $(GO) test -count=1 -run '^TestSmoke$$' -bench . -benchtime 1x ./...

# Container images, one per binary, from cmd/<binary>/Dockerfile with the
# repository root as context. CONTAINER_ENGINE defaults to docker if its daemon
# answers, else podman; when neither answers no image is built, and that is
# not an error (make images IMAGES=relay builds one).
IMAGE_REGISTRY ?= ghcr.io/clusterconnect
IMAGES ?= clusteragent relay kube-aad-proxy guard connectctl
CONTAINER_ENGINE ?=

images:
	@engine="$(CONTAINER_ENGINE)"; \
	if [ -z "$$engine" ]; then \
		if docker info >/dev/null 2>&1; then engine=docker; \
		elif podman info >/dev/null 2>&1; then engine=podman; fi; \
	fi; \
	if [ -z "$$engine" ]; then \
		echo "images: no container engine answers (tried docker info, podman info); no image was built"; \
		exit 0; \
	fi; \
	for b in $(IMAGES); do \
		echo "$$engine build -f cmd/$$b/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE_REGISTRY)/$$b:$(VERSION) ."; \
		$$engine build -f cmd/$$b/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE_REGISTRY)/$$b:$(VERSION) . || exit 1; \
	done

clean:
	rm -rf bin .demo
