package helm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"encoding/json"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/deploy/helm/helmtest"
	"github.com/meridianhq/meridian/internal/kubetest"
)

// TestAppliedToAPIServer installs the Prometheus Operator's CRDs into a real
// kube-apiserver, then server-side applies every object each values set renders (unknown
// fields are errors) and reads each back.
func TestAppliedToAPIServer(t *testing.T) {
	dir := kubetest.Tools(t, "bin/helm", "bin/kube-apiserver", "bin/etcd", "crds/.done")
	started := time.Now()
	k := kubetest.Start(t)
	t.Logf("kube-apiserver ready in %s", time.Since(started).Round(time.Second))

	crds, _ := filepath.Glob(filepath.Join(dir, "crds/*.yaml"))
	if len(crds) == 0 {
		t.Fatal("no CRD manifests in " + dir + "/crds")
	}
	k.Discover(t)
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd map[string]any
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		k.InstallCRD(t, crd)
	}
	if !k.Serves("monitoring.coreos.com/v1/PrometheusRule") {
		t.Fatal("PrometheusRule not served after installing the CRDs")
	}

	// The check has teeth: a misspelt field is refused, not dropped.
	typo := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "typo", "namespace": "default"}, "dataa": map[string]any{"k": "v"}}
	if err := k.Apply(typo, "default"); err == nil || !strings.Contains(err.Error(), "dataa") {
		t.Fatalf("an unknown field was not refused: %v", err)
	}

	for name, file := range helmtest.ValueSets {
		t.Run(name, func(t *testing.T) {
			ns := "meridian-" + name
			if err := k.Apply(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}, ""); err != nil {
				t.Fatal(err)
			}
			objs := helmtest.Render(t, file, ns)
			for _, o := range objs {
				id := o["kind"].(string) + "/" + helmtest.Dig(o, "metadata", "name").(string)
				if err := k.Apply(o, ns); err != nil {
					t.Errorf("%s: %v", id, err)
					continue
				}
				got, err := k.Get(o, ns)
				if err != nil {
					t.Errorf("%s: read back: %v", id, err)
					continue
				}
				if diff := subset(o, got, id); diff != "" {
					t.Errorf("stored object differs from the rendered one: %s", diff)
				}
			}
			t.Logf("%d objects applied and read back: %v", len(objs), kinds(objs))
			if kinds(objs)["ClusterRoleBinding"] > 0 {
				checkAccess(t, k, ns)
			}
		})
	}
}

// checkAccess asks the API server's authorizer (SubjectAccessReview) what the chart's
// ServiceAccount may do once the rendered RBAC is applied: what the inventory and the SLO
// watch use, and not more.
func checkAccess(t *testing.T, k *kubetest.Server, ns string) {
	t.Helper()
	user := "system:serviceaccount:" + ns + ":meridian"
	for _, c := range []struct {
		group, resource, verb string
		allowed               bool
	}{
		{"", "nodes", "watch", true},
		{"", "namespaces", "list", true},
		{"apps", "deployments", "list", true},
		{"apps", "statefulsets", "watch", true},
		{"cluster.karmada.io", "clusters", "list", true},
		{"sloth.slok.dev", "prometheusservicelevels", "watch", true},
		{"pyrra.dev", "servicelevelobjectives", "list", true},
		{"", "events", "create", true},
		{"", "nodes", "update", false},
		{"", "secrets", "get", false},
		{"", "events", "delete", false},
	} {
		body, _ := json.Marshal(map[string]any{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
			"spec": map[string]any{"user": user, "resourceAttributes": map[string]any{"group": c.group, "resource": c.resource, "verb": c.verb, "namespace": "default"}}})
		code, out, err := k.Do("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", "application/json", body)
		if err != nil || code != 201 {
			t.Fatalf("SubjectAccessReview: %d %v %s", code, err, out)
		}
		var r struct{ Status struct{ Allowed bool } }
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != c.allowed {
			t.Errorf("%s %s %s: allowed %v, want %v", user, c.verb, fmt.Sprintf("%s/%s", c.group, c.resource), r.Status.Allowed, c.allowed)
		}
	}
}
