// The Helm chart's tests: helm lint and template for the default values and the
// examples, and every rendered object server-side applied into a real kube-apiserver.
package helm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/internal/kubetest"
)

const chart = "meridian"

// kubeVersion is the API server the chart is proven against; helm built from source
// (without release ldflags) would otherwise assume v1.20.
const kubeVersion = "v1.34.4"

// valueSets are the values files the chart is proven with; "" is the defaults.
var valueSets = map[string]string{
	"defaults":     "",
	"multi-region": "examples/multi-region.yaml",
}

// helm runs the helm binary; its own caches and config stay in a temporary home.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(kubetest.Tools(t, "bin/helm"), "bin/helm"), args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return out.String() + stderr.String(), err
	}
	if stderr.Len() > 0 {
		return out.String(), errors.New("stderr: " + stderr.String())
	}
	return out.String(), nil
}

func valuesArgs(file string) []string {
	if file == "" {
		return nil
	}
	return []string{"-f", file}
}

func TestLint(t *testing.T) {
	for name, file := range valueSets {
		t.Run(name, func(t *testing.T) {
			out, err := helm(t, append([]string{"lint", "--strict", "--kube-version", kubeVersion, chart}, valuesArgs(file)...)...)
			if err != nil || !strings.Contains(out, "0 chart(s) failed") || strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// render runs helm template and splits the output into objects.
func render(t *testing.T, file, namespace string, set ...string) []map[string]any {
	t.Helper()
	args := append([]string{"template", "meridian", chart, "--kube-version", kubeVersion, "--namespace", namespace}, valuesArgs(file)...)
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	var objs []map[string]any
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template output: %v", err)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
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
		"defaults":     {"StatefulSet": 1, "ConfigMap": 8, "Service": 2, "NetworkPolicy": 1, "PodDisruptionBudget": 1, "ServiceAccount": 1},
		"multi-region": {"StatefulSet": 1, "DaemonSet": 1, "Deployment": 2, "Service": 4, "PodDisruptionBudget": 2, "ServiceMonitor": 1, "PodMonitor": 1, "PrometheusRule": 1},
	}
	for name, file := range valueSets {
		t.Run(name, func(t *testing.T) {
			objs := render(t, file, "meridian")
			got := kinds(objs)
			for k, n := range want[name] {
				if got[k] != n {
					t.Errorf("%d %s, want %d (all: %v)", got[k], k, n, got)
				}
			}
			if got["Secret"] != 0 {
				t.Error("the chart renders a Secret; secrets must come from references")
			}
			for _, o := range objs {
				checkPod(t, o)
			}
		})
	}
}

// checkPod asserts the security settings of a workload's pod template.
func checkPod(t *testing.T, o map[string]any) {
	t.Helper()
	spec, ok := dig(o, "spec", "template", "spec").(map[string]any)
	if !ok {
		return
	}
	name := dig(o, "metadata", "name")
	c := dig(spec, "containers").([]any)[0].(map[string]any)
	if dig(c, "securityContext", "readOnlyRootFilesystem") != true || dig(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Errorf("%s: container security context %v", name, c["securityContext"])
	}
	if caps := dig(c, "securityContext", "capabilities", "drop"); !reflect.DeepEqual(caps, []any{"ALL"}) {
		t.Errorf("%s: drops %v, want ALL", name, caps)
	}
	added, _ := dig(c, "securityContext", "capabilities", "add").([]any)
	if o["kind"] == "DaemonSet" {
		if !reflect.DeepEqual(added, []any{"NET_ADMIN"}) {
			t.Errorf("%s: adds %v, want only NET_ADMIN", name, added)
		}
	} else if len(added) != 0 || dig(spec, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%s: adds %v, runAsNonRoot %v", name, added, dig(spec, "securityContext", "runAsNonRoot"))
	}
	if spec["automountServiceAccountToken"] != false {
		t.Errorf("%s: mounts a service account token", name)
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

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// TestRejectedValues: the schema and the templates refuse what cannot work, naming it.
func TestRejectedValues(t *testing.T) {
	cases := []struct {
		set  []string
		want string
	}{
		{[]string{"clickhouse.dsn=clickhouse://meridian:hunter2@ch:9440"}, "/clickhouse/dsn"},
		{[]string{"secrets.apiToken.name="}, "secrets.apiToken.name"},
		{[]string{"collectors.hubble.enabled=true", "collectors.hubble.relays={relay:80}"}, "set clickhouse.dsn"},
		{[]string{"core.replicas=2"}, "embedded engine allows one replica"},
		{[]string{"core.nosuchfield=1"}, "nosuchfield"},
		{[]string{"log.format=xml"}, "/log/format"},
		{[]string{"clickhouse.dsn=clickhouse://m@ch:9440", "collectors.ceph.enabled=true"}, "collectors.ceph.mgrURLs"},
	}
	for _, c := range cases {
		args := []string{"template", "meridian", chart, "--kube-version", kubeVersion}
		for _, s := range c.set {
			args = append(args, "--set", s)
		}
		out, err := helm(t, args...)
		if err == nil || !strings.Contains(out+err.Error(), c.want) {
			t.Errorf("%v: want an error naming %q, got %v\n%.500s", c.set, c.want, err, out)
		}
	}
}

// TestFilesCurrent: the chart carries copies of the generated SLO rules and of the
// dashboards (helm reads nothing outside the chart); they must equal the originals.
func TestFilesCurrent(t *testing.T) {
	for src, dst := range map[string]string{"../../alerts/rules/*.yml": "meridian/files/rules", "../../dashboards/*.json": "meridian/files/dashboards"} {
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
// TestRulesCurrent keeps them current).
func TestPrometheusRuleIsGenerated(t *testing.T) {
	var rule map[string]any
	for _, o := range render(t, "", "meridian", "prometheusRule.enabled=true") {
		if o["kind"] == "PrometheusRule" {
			rule = o
		}
	}
	if rule == nil {
		t.Fatal("no PrometheusRule rendered")
	}
	files, _ := filepath.Glob("../../alerts/rules/*.yml")
	sort.Strings(files)
	var want []any
	for _, f := range files {
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
	got := dig(rule, "spec", "groups")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PrometheusRule groups differ from alerts/rules (%d groups rendered, %d generated)", len(got.([]any)), len(want))
	}
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
