# glaceon: reach private Fly.io apps from Kubernetes pods, in userspace.
# `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BIN       := bin
# Images are named $(REGISTRY)/glaceon and $(REGISTRY)/glaceon-sidecar.
REGISTRY  ?= ghcr.io/glaceon
DIST      ?= dist
# hack/release owns the build flags (version, commit, sidecar repository
# stamped by the linker), for make build and the images alike.
RELEASE   := $(GO) run ./hack/release
# Whole-suite timeout: envtest and the tunnel e2e tests are in it.
TEST_TIMEOUT ?= 30m
TEST_FLAGS   ?=
BENCH_TIME   ?= 3x

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n\n"} /^[a-zA-Z0-9_-]+:.*##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build glaceon and glaceon-sidecar into bin/ (static, host platform)
	$(RELEASE) binaries --out $(BIN) --registry $(REGISTRY) --version $(VERSION) --commit $(COMMIT)

.PHONY: images
images: ## Build the OCI images (linux/amd64 + linux/arm64) into dist/oci, no Docker needed
	$(RELEASE) images --out $(DIST) --registry $(REGISTRY) --version $(VERSION) --commit $(COMMIT)

.PHONY: push
push: images ## Push the images to REGISTRY=… (credentials from the docker config file)
	$(RELEASE) push --out $(DIST)

.PHONY: release
release: images control-plane ## Write dist/install.yaml and dist/values.yaml, images pinned by digest
	$(RELEASE) install --out $(DIST) --kubectl "$$(hack/control-plane.sh)/kubectl"

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
manifests: ## Generate the CRDs into deploy/crd and the chart's crds/ (controller-gen)
	@if [[ -d webhook/api ]]; then "$$(hack/tool.sh controller-gen)" crd paths=./webhook/api/... output:crd:artifacts:config=deploy/crd; fi
	@# Helm installs crds/ untemplated: copies of deploy/crd (deploy/chart_test.go checks).
	@rm -f deploy/chart/crds/*.yaml; for f in deploy/crd/*.yaml; do \
	  [[ "$$(basename "$$f")" == kustomization.yaml ]] || cp "$$f" deploy/chart/crds/; done

.PHONY: bench
bench: ## WAN matrix, sidecar (UDP and WebSocket) vs stock forwarder (root; ~15 min, QUICK=1: ~2.5 min; docs/benchmarks.md)
	mkdir -p $(BIN) && hack/bench-wan.sh -json $(BIN)/bench-wan.json -svg $(BIN)/bench-wan.svg

.PHONY: bench-loopback
bench-loopback: ## Loopback tunnel benchmark and the Go benchmarks (docs/benchmarks.md)
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
	rm -rf $(BIN) $(DIST)
