package ruler

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/alerts/slo"
	"github.com/meridianhq/meridian/internal/kubetest"
	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
)

// followBound is how soon the ruler must follow a change of an SLO object while the
// API server is up (measured: see the test's log lines).
const followBound = 10 * time.Second

func readObject(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// groupRules maps each loaded rule group of the ruler to its rules, rendered.
func groupRules(r *Ruler) map[string][]string {
	out := map[string][]string{}
	for _, g := range r.manager.RuleGroups() {
		for _, rule := range g.Rules() {
			out[g.Name()] = append(out[g.Name()], rule.String())
		}
	}
	return out
}

// expectedGroups are the groups generated from the object as a spec file (the path the
// objects' rules must equal), by name, with their rule counts.
func expectedGroups(t *testing.T, obj map[string]any) map[string]int {
	t.Helper()
	b, _ := json.Marshal(obj)
	specs, err := slo.Parse("object", b)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range specs {
		gs, err := slo.Generate(s, slo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			out[g.Name] = len(g.Rules)
		}
	}
	return out
}

func hasGroups(r *Ruler, want map[string]int) error {
	got := groupRules(r)
	for name, n := range want {
		if len(got[name]) != n {
			return fmt.Errorf("group %s: %d rules loaded, want %d", name, len(got[name]), n)
		}
	}
	return nil
}

func lacksGroups(r *Ruler, want map[string]int) error {
	got := groupRules(r)
	for name := range want {
		if _, ok := got[name]; ok {
			return fmt.Errorf("group %s still loaded", name)
		}
	}
	return nil
}

// follow runs change and waits until cond holds, returning how long it took.
func follow(t *testing.T, what string, within time.Duration, change func() error, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := change(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	wait.For(t, within, what, cond)
	d := time.Since(start)
	t.Logf("FOLLOW %s: %s", what, d.Round(time.Millisecond))
	return d
}

// TestKubernetesSLOObjects runs the ruler against a real kube-apiserver and etcd with
// Sloth's and Pyrra's CRDs installed from their published manifests: creating, updating
// and deleting PrometheusServiceLevels and ServiceLevelObjectives changes the loaded
// rule groups within followBound, without a restart; an invalid object gets a Warning
// Event on it and is counted while the others load; an API outage keeps the last rules,
// and changes made after it are followed again.
func TestKubernetesSLOObjects(t *testing.T) {
	api := kubetest.Start(t)
	api.Discover(t)
	api.InstallCRD(t, readObject(t, "../../testdata/slo/crds/sloth.slok.dev_prometheusservicelevels.yaml"))
	api.InstallCRD(t, readObject(t, "../../testdata/slo/crds/pyrra.dev_servicelevelobjectives.yaml"))
	const ns = "monitoring"
	if err := api.Apply(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}, ""); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	cfg.Kubernetes.Enabled = true
	cfg.Kubernetes.Kubeconfig = api.Kubeconfig(t)
	reg := prometheus.NewRegistry()
	r := startRulerConfig(t, sli.New(sli.Deps{Inventory: inventory.Static(testInventory())}), reg, cfg)
	wait.For(t, time.Minute, "informers synced", func() error {
		if !r.kube.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	shipped := len(groupRules(r))

	sloth := readObject(t, "../../testdata/slo/sloth/k8s-getting-started.yml")
	slothGroups := expectedGroups(t, sloth)
	pyrra := readObject(t, "../../testdata/slo/pyrra/http.yaml")
	delete(pyrra["spec"].(map[string]any), "partial_response_strategy") // Thanos-only, not in Pyrra's published CRD
	pyrra["metadata"].(map[string]any)["namespace"] = ns
	pyrraGroups := expectedGroups(t, pyrra)
	// Pyrra's other indicators: a native-histogram latency and a bool gauge.
	native := readObject(t, "../../testdata/slo/pyrra/http-latency-native.yaml")
	native["metadata"].(map[string]any)["namespace"] = ns
	nativeGroups := expectedGroups(t, native)
	gauge := readObject(t, "../../testdata/slo/pyrra/up-targets-grouping-regex.yaml")
	gauge["metadata"].(map[string]any)["namespace"] = ns
	gaugeGroups := expectedGroups(t, gauge)

	var took []time.Duration
	took = append(took, follow(t, "Sloth PrometheusServiceLevel created", followBound,
		func() error { return api.Apply(sloth, ns) }, func() error { return hasGroups(r, slothGroups) }))
	took = append(took, follow(t, "Pyrra ServiceLevelObjective created", followBound,
		func() error { return api.Apply(pyrra, ns) }, func() error { return hasGroups(r, pyrraGroups) }))
	took = append(took, follow(t, "Pyrra latencyNative objective created", followBound,
		func() error { return api.Apply(native, ns) }, func() error { return hasGroups(r, nativeGroups) }))
	took = append(took, follow(t, "Pyrra bool_gauge objective created", followBound,
		func() error { return api.Apply(gauge, ns) }, func() error { return hasGroups(r, gaugeGroups) }))
	if got, pyrras := len(groupRules(r)), len(pyrraGroups)+len(nativeGroups)+len(gaugeGroups); got != shipped+len(slothGroups)+pyrras {
		t.Fatalf("%d groups loaded, want %d shipped + %d Sloth + %d Pyrra", got, shipped, len(slothGroups), pyrras)
	}
	info := strings.Join(groupRules(r)["sloth-slo-meta-recordings-myservice-requests-availability"], "\n")
	if !strings.Contains(info, "sloth_mode: ctrl-gen-k8s") {
		t.Errorf("sloth_slo_info of an object is not in Sloth's controller mode:\n%s", info)
	}

	// An update: the objective moves from 99.9 to 99.5, and the recorded objective with it.
	slos := sloth["spec"].(map[string]any)["slos"].([]any)
	slos[0].(map[string]any)["objective"] = 99.5
	took = append(took, follow(t, "Sloth objective updated", followBound,
		func() error { return api.Apply(sloth, ns) }, func() error {
			if rs := groupRules(r)["sloth-slo-meta-recordings-myservice-requests-availability"]; !slices.ContainsFunc(rs, func(s string) bool { return strings.Contains(s, "vector(0.995)") }) {
				return fmt.Errorf("slo:objective:ratio not 0.995 yet: %v", rs)
			}
			return nil
		}))

	// A bad object next to them: an Event on it, counted, logged; the others stay and a
	// good object created after it still loads.
	bad := readObject(t, "../../testdata/slo/pyrra/http.yaml")
	delete(bad["spec"].(map[string]any), "partial_response_strategy")
	bad["metadata"].(map[string]any)["name"] = "bad"
	bad["spec"].(map[string]any)["target"] = "101"
	if err := api.Apply(bad, ns); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, api, ns, "bad", "spec.target")
	badNative := readObject(t, "../../testdata/slo/pyrra/http-latency-native.yaml")
	badNative["metadata"].(map[string]any)["name"] = "bad-native"
	badNative["spec"].(map[string]any)["indicator"].(map[string]any)["latencyNative"].(map[string]any)["latency"] = "fast"
	if err := api.Apply(badNative, ns); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, api, ns, "bad-native", "spec.indicator.latencyNative.latency")
	if n := promtest.Sum(t, reg, "meridian_slo_object_invalid_total", "kind", "ServiceLevelObjective"); n != 2 {
		t.Errorf("meridian_slo_object_invalid_total = %v, want 2", n)
	}
	if n := promtest.Sum(t, reg, "meridian_slo_objects", "state", "invalid"); n != 2 {
		t.Errorf("meridian_slo_objects{state=invalid} = %v, want 2", n)
	}
	if n := promtest.Sum(t, reg, "meridian_slo_objects", "state", "valid"); n != 4 {
		t.Errorf("meridian_slo_objects{state=valid} = %v, want 4", n)
	}
	// Rules the ruler's own parser would refuse (longer than ruler.query_max_length)
	// are reported on their object too, not failing the whole set at load.
	long := readObject(t, "../../testdata/slo/pyrra/http.yaml")
	delete(long["spec"].(map[string]any), "partial_response_strategy")
	long["metadata"].(map[string]any)["name"] = "long"
	ratio := long["spec"].(map[string]any)["indicator"].(map[string]any)["ratio"].(map[string]any)
	ratio["total"].(map[string]any)["metric"] = `http_requests_total{job="` + strings.Repeat("a", cfg.QueryMaxLength) + `"}`
	if err := api.Apply(long, ns); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, api, ns, "long", "ruler.query_max_length")
	second := readObject(t, "../../testdata/slo/pyrra/http.yaml")
	delete(second["spec"].(map[string]any), "partial_response_strategy")
	second["metadata"].(map[string]any)["name"] = "http-second"
	secondGroups := expectedGroups(t, second)
	took = append(took, follow(t, "good object after a bad one", followBound,
		func() error { return api.Apply(second, ns) }, func() error { return hasGroups(r, secondGroups) }))
	if err := hasGroups(r, slothGroups); err != nil {
		t.Fatal(err)
	}
	for _, want := range []map[string]int{pyrraGroups, nativeGroups, gaugeGroups} {
		if err := hasGroups(r, want); err != nil {
			t.Fatal(err)
		}
	}

	// An update that breaks a loaded object keeps its last valid rules, with an Event.
	broken := readObject(t, "../../testdata/slo/sloth/k8s-getting-started.yml")
	bslos := broken["spec"].(map[string]any)["slos"].([]any)
	bslos[0].(map[string]any)["sli"].(map[string]any)["events"].(map[string]any)["errorQuery"] = "sum(rate(broken[{{.window}}])"
	if err := api.Apply(broken, ns); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, api, ns, "sloth-slo-my-service", "invalid PromQL")
	if err := hasGroups(r, slothGroups); err != nil {
		t.Fatalf("a broken update removed the last valid rules: %v", err)
	}

	// API outage: the rules stay; after it, a deletion is followed again.
	before := groupRules(r)
	down := time.Now()
	api.StopAPI()
	wait.For(t, time.Minute, "watch errors counted", func() error {
		if promtest.Sum(t, reg, "meridian_slo_api_errors_total") == 0 {
			return fmt.Errorf("no API error counted yet")
		}
		return nil
	})
	if got := groupRules(r); len(got) != len(before) {
		t.Fatalf("outage changed the loaded groups: %d, was %d", len(got), len(before))
	}
	api.StartAPI(t)
	outage := time.Since(down)
	after := follow(t, "Pyrra object deleted after the outage", 2*time.Minute,
		func() error { return api.Delete(pyrra, ns) }, func() error { return lacksGroups(r, pyrraGroups) })

	took = append(took, follow(t, "Sloth object deleted", followBound,
		func() error { return api.Delete(sloth, ns) }, func() error { return lacksGroups(r, slothGroups) }))
	if err := hasGroups(r, secondGroups); err != nil {
		t.Fatal(err)
	}
	// The relist after the outage replayed the invalid object: not reported again.
	if n := promtest.Sum(t, reg, "meridian_slo_object_invalid_total"); n != 4 {
		t.Errorf("meridian_slo_object_invalid_total = %v, want 4 (bad, bad-native, long, the broken Sloth update), each once", n)
	}
	if n := promtest.Sum(t, reg, "meridian_slo_apply_errors_total"); n != 0 {
		t.Errorf("meridian_slo_apply_errors_total = %v, want 0", n)
	}
	t.Logf("FIGURE ruler follows object changes in max %s over %d changes (API up); first change after a %s outage (kill to ready): %s",
		slices.Max(took).Round(time.Millisecond), len(took), outage.Round(time.Second), after.Round(time.Millisecond))
}

// waitEvent waits for the Warning Event the ruler writes on an invalid object, whose
// message names the fault.
func waitEvent(t *testing.T, api *kubetest.Server, ns, name, says string) {
	t.Helper()
	path := "/api/v1/namespaces/" + ns + "/events?fieldSelector=" + url.QueryEscape("involvedObject.name="+name)
	wait.For(t, followBound, "event on "+name, func() error {
		var list struct {
			Items []struct {
				Reason, Message, Type string
			} `json:"items"`
		}
		api.GetJSON(t, path, &list)
		for _, e := range list.Items {
			if e.Reason == "InvalidSLOSpec" && e.Type == "Warning" && strings.Contains(e.Message, says) {
				return nil
			}
		}
		return fmt.Errorf("no InvalidSLOSpec event saying %q: %+v", says, list.Items)
	})
}
