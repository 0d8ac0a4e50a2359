// The Helm chart's tests: helm lint and template for the default values and the
// examples, and every rendered object server-side applied into a real kube-apiserver.
package helm

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/deploy/helm/helmtest"
)

func TestLint(t *testing.T) {
	for name, file := range helmtest.ValueSets {
		t.Run(name, func(t *testing.T) {
			out, err := helmtest.Helm(t, append([]string{"lint", "--strict", "--kube-version", helmtest.KubeVersion, helmtest.Chart}, helmtest.ValuesArgs(file)...)...)
			if err != nil || !strings.Contains(out, "0 chart(s) failed") || strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

func kinds(objs []map[string]any) map[string]int {
	n := map[string]int{}
	for _, o := range objs {
		n[o["kind"].(string)]++
	}
	return n
}

// TestTemplate checks what each values set renders: the workloads it asks for, no Secret
// (secrets are only referenced), a locked-down pod everywhere but where a capability is
// needed.
func TestTemplate(t *testing.T) {
	want := map[string]map[string]int{
		"defaults":     {"StatefulSet": 1, "ConfigMap": 9, "Service": 2, "NetworkPolicy": 1, "PodDisruptionBudget": 1, "ServiceAccount": 1, "ClusterRole": 0, "ClusterRoleBinding": 0},
		"multi-region": {"StatefulSet": 1, "DaemonSet": 1, "Deployment": 2, "Service": 4, "PodDisruptionBudget": 2, "ServiceMonitor": 1, "PodMonitor": 1, "PrometheusRule": 1, "ClusterRole": 1, "ClusterRoleBinding": 1},
	}
	for name, file := range helmtest.ValueSets {
		t.Run(name, func(t *testing.T) {
			objs := helmtest.Render(t, file, "meridian")
			got := kinds(objs)
			for k, n := range want[name] {
				if got[k] != n {
					t.Errorf("%d %s, want %d (all: %v)", got[k], k, n, got)
				}
			}
			if got["Secret"] != 0 {
				t.Error("the chart renders a Secret; secrets must come from references")
			}
			// The token is mounted exactly where a role is bound to use it.
			token := got["ClusterRoleBinding"] > 0
			for _, o := range objs {
				checkPod(t, o, token)
			}
			if token {
				checkRBAC(t, objs)
			}
		})
	}
}

// checkRBAC asserts the ClusterRole grants what the live inventory and the SLO watch use,
// and nothing more, and that it is bound to the chart's ServiceAccount.
func checkRBAC(t *testing.T, objs []map[string]any) {
	t.Helper()
	want := map[string]string{
		"/nodes": "get,list,watch", "/namespaces": "get,list,watch",
		"apps/deployments": "get,list,watch", "apps/statefulsets": "get,list,watch",
		"cluster.karmada.io/clusters":            "get,list,watch",
		"sloth.slok.dev/prometheusservicelevels": "get,list,watch",
		"pyrra.dev/servicelevelobjectives":       "get,list,watch",
		"/events":                                "create,patch",
	}
	got := map[string]string{}
	var role, sa string
	for _, o := range objs {
		switch o["kind"] {
		case "ClusterRole":
			role = helmtest.Dig(o, "metadata", "name").(string)
			for _, r := range o["rules"].([]any) {
				r := r.(map[string]any)
				var verbs []string
				for _, v := range r["verbs"].([]any) {
					verbs = append(verbs, v.(string))
				}
				for _, g := range r["apiGroups"].([]any) {
					for _, res := range r["resources"].([]any) {
						got[g.(string)+"/"+res.(string)] = strings.Join(verbs, ",")
					}
				}
			}
		case "ServiceAccount":
			sa = helmtest.Dig(o, "metadata", "name").(string)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ClusterRole grants %v, want %v", got, want)
	}
	for _, o := range objs {
		if o["kind"] != "ClusterRoleBinding" {
			continue
		}
		subj := o["subjects"].([]any)[0].(map[string]any)
		if helmtest.Dig(o, "roleRef", "name") != role || subj["name"] != sa || subj["kind"] != "ServiceAccount" {
			t.Errorf("ClusterRoleBinding binds %v to %v, want ClusterRole %s to ServiceAccount %s", helmtest.Dig(o, "roleRef", "name"), subj, role, sa)
		}
	}
}

// checkPod asserts the security settings of a workload's pod template.
func checkPod(t *testing.T, o map[string]any, token bool) {
	t.Helper()
	spec, ok := helmtest.Dig(o, "spec", "template", "spec").(map[string]any)
	if !ok {
		return
	}
	name := helmtest.Dig(o, "metadata", "name")
	c := helmtest.Dig(spec, "containers").([]any)[0].(map[string]any)
	if helmtest.Dig(c, "securityContext", "readOnlyRootFilesystem") != true || helmtest.Dig(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Errorf("%s: container security context %v", name, c["securityContext"])
	}
	if caps := helmtest.Dig(c, "securityContext", "capabilities", "drop"); !reflect.DeepEqual(caps, []any{"ALL"}) {
		t.Errorf("%s: drops %v, want ALL", name, caps)
	}
	added, _ := helmtest.Dig(c, "securityContext", "capabilities", "add").([]any)
	if o["kind"] == "DaemonSet" {
		if !reflect.DeepEqual(added, []any{"NET_ADMIN"}) {
			t.Errorf("%s: adds %v, want only NET_ADMIN", name, added)
		}
	} else if len(added) != 0 || helmtest.Dig(spec, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%s: adds %v, runAsNonRoot %v", name, added, helmtest.Dig(spec, "securityContext", "runAsNonRoot"))
	}
	if spec["automountServiceAccountToken"] != token {
		t.Errorf("%s: automountServiceAccountToken %v, want %v (a role bound: %v)", name, spec["automountServiceAccountToken"], token, token)
	}
	for _, p := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
		if c[p] == nil {
			t.Errorf("%s: no %s", name, p)
		}
	}
	for _, e := range c["env"].([]any) {
		if _, inline := e.(map[string]any)["value"]; inline {
			t.Errorf("%s: inline env value %v", name, e)
		}
	}
}

// TestRejectedValues: the schema and the templates refuse what cannot work, naming it.
func TestRejectedValues(t *testing.T) {
	cases := []struct {
		set  []string
		want string
	}{
		{[]string{"clickhouse.dsn=clickhouse://meridian:hunter2@ch:9440"}, "/clickhouse/dsn"},
		{[]string{"secrets.apiToken.name="}, "secrets.apiToken.name"},
		{[]string{"collectors.hubble.enabled=true", "collectors.hubble.relays={aegis=relay:80}"}, "set clickhouse.dsn"},
		{[]string{"clickhouse.dsn=clickhouse://m@ch:9440", "collectors.hubble.enabled=true", "collectors.hubble.relays={relay:80}"}, "/collectors/hubble/relays/0"},
		{[]string{"core.replicas=2"}, "embedded engine allows one replica"},
		{[]string{"core.nosuchfield=1"}, "nosuchfield"},
		{[]string{"log.format=xml"}, "/log/format"},
		{[]string{"clickhouse.dsn=clickhouse://m@ch:9440", "collectors.ceph.enabled=true"}, "collectors.ceph.mgrURLs"},
		{[]string{"kubernetes.inventory.enabled=true"}, "kubernetes.inventory.cluster"},
		{[]string{"ruler.kubernetes.namespce=x"}, "namespce"},
	}
	for _, c := range cases {
		args := []string{"template", "meridian", helmtest.Chart, "--kube-version", helmtest.KubeVersion}
		for _, s := range c.set {
			args = append(args, "--set", s)
		}
		out, err := helmtest.Helm(t, args...)
		if err == nil || !strings.Contains(out+err.Error(), c.want) {
			t.Errorf("%v: want an error naming %q, got %v\n%.500s", c.set, c.want, err, out)
		}
	}
}

// TestFilesCurrent: the chart carries copies of the generated SLO rules, of the built-in
// rules and of the dashboards (helm reads nothing outside the chart); they must equal the
// originals.
func TestFilesCurrent(t *testing.T) {
	for src, dst := range map[string]string{
		"../../alerts/rules/*.yml":   "meridian/files/rules",
		"../../alerts/builtin/*.yml": "meridian/files/builtin",
		"../../dashboards/*.json":    "meridian/files/dashboards",
	} {
		want, _ := filepath.Glob(src)
		got, _ := filepath.Glob(filepath.Join(dst, "*"))
		if len(want) == 0 || len(got) != len(want) {
			t.Errorf("%s has %d files, %s %d", dst, len(got), src, len(want))
		}
		for _, p := range want {
			a, _ := os.ReadFile(p)
			b, err := os.ReadFile(filepath.Join(dst, filepath.Base(p)))
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s/%s differs from %s: cp %s %s/", dst, filepath.Base(p), p, src, dst)
			}
		}
	}
}

// TestPrometheusRuleIsGenerated: the PrometheusRule's groups are exactly the groups of
// alerts/rules, which `meridian slo generate` writes from alerts/slos (alerts'
// TestRulesCurrent keeps them current), then those of alerts/builtin, the Ceph and
// self-alerts Meridian's own ruler evaluates too: a Prometheus given the chart's rule
// pages for what Meridian would.
func TestPrometheusRuleIsGenerated(t *testing.T) {
	var rule map[string]any
	for _, o := range helmtest.Render(t, "", "meridian", "prometheusRule.enabled=true") {
		if o["kind"] == "PrometheusRule" {
			rule = o
		}
	}
	if rule == nil {
		t.Fatal("no PrometheusRule rendered")
	}
	var want []any
	for _, f := range append(sortedGlob("../../alerts/rules/*.yml"), sortedGlob("../../alerts/builtin/*.yml")...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		want = append(want, doc["groups"].([]any)...)
	}
	got := helmtest.Dig(rule, "spec", "groups")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PrometheusRule groups differ from alerts/rules and alerts/builtin (%d groups rendered, %d shipped)", len(got.([]any)), len(want))
	}
	names := map[any]bool{}
	for _, g := range got.([]any) {
		names[g.(map[string]any)["name"]] = true
	}
	for _, builtin := range []string{"meridian-ceph", "meridian-self"} {
		if !names[builtin] {
			t.Errorf("PrometheusRule lacks the built-in group %s", builtin)
		}
	}
}

func sortedGlob(pattern string) []string {
	files, _ := filepath.Glob(pattern)
	sort.Strings(files)
	return files
}

// subset reports the first place where want (rendered) is not contained in got
// (stored, with the server's defaults added).
func subset(want, got any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return path + ": not an object"
		}
		for k, v := range w {
			if d := subset(v, g[k], path+"."+k); d != "" {
				return d
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return path + ": list length differs"
		}
		for i := range w {
			if d := subset(w[i], g[i], path+"["+strconv.Itoa(i)+"]"); d != "" {
				return d
			}
		}
	case int:
		if f, ok := got.(float64); !ok || f != float64(w) {
			return path + ": " + strings.TrimSpace(yamlString(want)) + " stored as " + yamlString(got)
		}
	default:
		if !reflect.DeepEqual(want, got) {
			return path + ": " + strings.TrimSpace(yamlString(want)) + " stored as " + yamlString(got)
		}
	}
	return ""
}

func yamlString(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}
