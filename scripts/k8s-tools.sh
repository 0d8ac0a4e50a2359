#!/usr/bin/env bash
# Builds what the Helm chart test (deploy/helm) needs into a cache outside the tree, once:
# kube-apiserver and etcd (from the Go module proxy, no release downloads), helm, and the
# Prometheus Operator's CRD manifests from its Go module.
# Usage: scripts/k8s-tools.sh DEST_DIR
set -euo pipefail
dest=$1
K8S=v1.34.4 STAGING=v0.34.4 HELM=v3.19.0 PROMOP=v0.85.0
[ -x "$dest/bin/kube-apiserver" ] && [ -x "$dest/bin/etcd" ] && [ -x "$dest/bin/helm" ] &&
	[ -s "$dest/crds/.done" ] && exit 0
mkdir -p "$dest/bin" "$dest/crds"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

if [ ! -x "$dest/bin/helm" ]; then
	echo "k8s-tools: building helm $HELM (about 2 CPU-minutes)" >&2
	GOBIN="$dest/bin" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM"
fi

if [ ! -x "$dest/bin/kube-apiserver" ] || [ ! -x "$dest/bin/etcd" ]; then
	# k8s.io/kubernetes replaces its staging modules with paths its module zip lacks, so it
	# builds only from a wrapper module that points each one at its published version.
	echo "k8s-tools: building kube-apiserver $K8S and etcd (about 6 CPU-minutes)" >&2
	w="$tmp/wrap"; mkdir -p "$w/etcd"
	{
		echo "module meridian.local/k8stools"
		echo "go 1.26"
		echo "require k8s.io/kubernetes $K8S"
		for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go \
			cloud-provider cluster-bootstrap code-generator component-base component-helpers \
			controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation \
			endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy \
			kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission \
			sample-apiserver sample-cli-plugin sample-controller; do
			echo "replace k8s.io/$m => k8s.io/$m $STAGING"
		done
	} >"$w/go.mod"
	printf 'package tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >"$w/tools.go"
	# etcd at the version kube-apiserver is built against, started with its embed package
	# (flags: -dir, -client-url).
	cat >"$w/etcd/main.go" <<'EOF'
package main

import (
	"flag"
	"log"
	"net/url"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dir := flag.String("dir", "", "data directory")
	client := flag.String("client-url", "http://127.0.0.1:2379", "client URL")
	peer := flag.String("peer-url", "http://127.0.0.1:2380", "peer URL")
	flag.Parse()
	cfg := embed.NewConfig()
	cfg.Dir = *dir
	cu, err := url.Parse(*client)
	if err != nil {
		log.Fatal(err)
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		log.Fatal(err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "warn"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	<-e.Server.ReadyNotify()
	log.Printf("etcd ready on %s", cu)
	log.Fatal(<-e.Err())
}
EOF
	(cd "$w" && GOFLAGS=-mod=mod go mod tidy >&2 &&
		go build -trimpath -o "$dest/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver &&
		go build -trimpath -o "$dest/bin/etcd" ./etcd)
fi

if [ ! -s "$dest/crds/.done" ]; then
	dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMOP" |
		sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	cp "$dir"/example/prometheus-operator-crd/*.yaml "$dest/crds/"
	chmod u+w "$dest"/crds/*.yaml
	echo "$PROMOP" >"$dest/crds/.done"
fi
echo "k8s-tools: ready in $dest ($((SECONDS - start)) s)" >&2
