# glaceon: reach private Fly.io apps from Kubernetes pods, in userspace.
# `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/glaceon/glaceon/flyapi/version.Version=$(VERSION)
BIN       := bin
# Whole-suite timeout: envtest and the tunnel e2e tests are in it.
TEST_TIMEOUT ?= 30m
TEST_FLAGS   ?=
BENCH_TIME   ?= 3x

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n\n"} /^[a-zA-Z0-9_-]+:.*##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build glaceon and glaceon-sidecar into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

.PHONY: control-plane
control-plane: ## Build (once, cached) etcd, kube-apiserver, kube-controller-manager, kubectl
	hack/control-plane.sh >/dev/null

.PHONY: test
test: control-plane ## Run every test: unit, fuzz seeds, envtest and end-to-end
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...

.PHONY: test-short
test-short: ## Unit tests only (no control plane)
	$(GO) test -short ./...

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZ_TIME each (default 20s)
	hack/fuzz.sh $${FUZZ_TIME:-20s}

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out="$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go'))"; \
	  if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	"$$(hack/tool.sh staticcheck)" ./...

.PHONY: generate
generate: ## Generate deepcopy code (controller-gen)
	@if [[ -d webhook/api ]]; then "$$(hack/tool.sh controller-gen)" object paths=./webhook/api/...; fi

.PHONY: manifests
manifests: ## Generate the CRD into deploy/ (controller-gen)
	@if [[ -d webhook/api ]]; then "$$(hack/tool.sh controller-gen)" crd paths=./webhook/api/... output:crd:artifacts:config=deploy/crd; fi

.PHONY: bench
bench: ## Run the benchmarks (see docs/benchmarks.md)
	@if [[ -x hack/bench-tunnel.sh ]]; then hack/bench-tunnel.sh; fi
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCH_TIME) ./...

.PHONY: soak
soak: ## Soak the sidecar under connection churn for SOAK_DURATION (default 30m; see docs/benchmarks.md)
	$(GO) run ./hack/soak -duration $${SOAK_DURATION:-30m}

.PHONY: demo
demo: ## Run the local demo: control plane + Fly double + webhook + a pod + traffic
	hack/demo.sh

.PHONY: clean
clean: ## Remove build output (the control-plane cache stays; see hack/control-plane.sh)
	rm -rf $(BIN)
