# Meridian: `make run` starts everything on the embedded default, `make test` runs every
# test. Both install what they need (Go modules, libchdb.so, Debian packages, npm packages).

SHELL := /bin/bash
GO ?= go
CACHE ?= $(HOME)/.cache/meridian
CHDB_VERSION := 26.7.3-stable.1
export MERIDIAN_CHDB_LIB ?= $(CACHE)/chdb-$(CHDB_VERSION)/package/libchdb.so
# helm, kube-apiserver, etcd and the Prometheus Operator CRDs for the chart's tests.
export MERIDIAN_K8S_TOOLS ?= $(CACHE)/k8s-v1.34.4

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/meridianhq/meridian/internal/build.Version=$(VERSION) -X github.com/meridianhq/meridian/internal/build.Revision=$(REVISION)

# Debian packages the tests start for real (see each package's README).
APT_TEST := iproute2 wireguard-go wireguard-tools haproxy keepalived iptables \
	ceph-mon ceph-mgr ceph-osd ceph-common ceph-mgr-modules-core uuid-runtime curl \
	prometheus prometheus-alertmanager \
	knot knot-dnsutils dnsperf gdnsd bind9-dnsutils \
	chromium fonts-liberation
APT_RUN := knot-dnsutils

.PHONY: all build run soak test bench chdb k8s-tools image apt-test apt-run modules web fmt vet clean

all: build

modules:
	$(GO) mod download

chdb:
	@scripts/chdb.sh $(CHDB_VERSION) $(CACHE)/chdb-$(CHDB_VERSION)

k8s-tools:
	@scripts/k8s-tools.sh $(MERIDIAN_K8S_TOOLS)

# OCI image layouts under dist/ (deploy/image/README.md): no Docker daemon needed.
# IMAGE_FLAGS=-tarballs also writes tarballs for docker/podman load.
image: chdb modules
	$(GO) run ./cmd/imagebuild -version $(VERSION) -chdb-lib $(MERIDIAN_CHDB_LIB) -out dist $(IMAGE_FLAGS)

apt-test:
	@scripts/apt-deps.sh $(APT_TEST)

apt-run:
	@scripts/apt-deps.sh $(APT_RUN)

web:
	@if [ -f topomap/web/package.json ]; then $(MAKE) -C topomap/web; fi

build: modules web
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/meridian ./cmd/meridian

run: apt-run chdb build
	./bin/meridian lab run

# One hour of the lab on the soak schedule (lab/README.md); the report and BENCH lines go
# to soak.out, heap profiles to soak.heap.warm and soak.heap (go tool pprof -base
# soak.heap.warm soak.heap), and a broken invariant fails the target. SOAK_DURATION=10m for
# a short one.
SOAK_DURATION ?= 1h
soak: apt-run chdb build
	set -o pipefail; ./bin/meridian lab soak -duration $(SOAK_DURATION) -heap-profile soak.heap 2>soak.log | tee soak.out

test: apt-test chdb k8s-tools modules web
	$(GO) vet ./...
	$(GO) test -timeout 40m -count=1 ./...

bench: apt-test chdb modules web
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 40m ./... | tee bench.out | grep -E '^(BENCH|ok|FAIL|---)'
	scripts/bench-table.sh bench.out BENCHMARKS.md

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin dist
