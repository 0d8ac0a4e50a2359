package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meridianhq/meridian/deploy/helm/helmtest"
)

// TestChartArgsParse feeds the container args the Helm chart renders (deploy/helm) to
// Meridian's own flag registration, the one main parses with: a flag renamed on one side
// only fails here, not in a cluster. Then the whole configuration each pod would start
// with (its args over the chart's ConfigMap) must pass Meridian's parse and validation.
func TestChartArgsParse(t *testing.T) {
	for name, file := range helmtest.ValueSets {
		t.Run(name, func(t *testing.T) {
			objs := helmtest.Render(t, file, "meridian")
			config := chartConfigFile(t, objs)
			n := 0
			for _, o := range objs {
				for _, c := range podContainers(o) {
					where := o["kind"].(string) + " " + o["metadata"].(map[string]any)["name"].(string) + " container " + c.name
					fs := flag.NewFlagSet("meridian", flag.ContinueOnError)
					fs.SetOutput(io.Discard)
					var cfg Config
					cfg.RegisterFlags(fs)
					if err := fs.Parse(c.args); err != nil {
						t.Errorf("%s: %v (args %q)", where, err, c.args)
						continue
					}
					if fs.NArg() > 0 {
						t.Errorf("%s: argument %q is not a flag", where, fs.Arg(0))
					}
					args := withConfigFile(c.args, config)
					parsed, err := parseConfig(args, io.Discard)
					if err != nil {
						t.Errorf("%s: the configuration it would start with is refused: %v", where, err)
						continue
					}
					// The kubernetes values reach the configuration the pods read.
					if name == "multi-region" && (len(parsed.InventorySources.Kubernetes) != 1 || parsed.InventorySources.Kubernetes[0].Cluster != "brain-tokyo" || !parsed.Ruler.Kubernetes.Enabled) {
						t.Errorf("%s: inventory_sources.kubernetes %+v, ruler.kubernetes %+v: want the chart's kubernetes values", where, parsed.InventorySources.Kubernetes, parsed.Ruler.Kubernetes)
					}
					n++
				}
			}
			if n == 0 {
				t.Fatal("no container rendered")
			}
			t.Logf("%d containers' args parsed", n)
		})
	}
}

type container struct {
	name string
	args []string
}

// podContainers returns the containers of a workload's pod template, their $(VAR)
// references expanded as the kubelet would, from the container's env.
func podContainers(o map[string]any) []container {
	spec, _ := helmtest.Dig(o, "spec", "template", "spec").(map[string]any)
	list, _ := spec["containers"].([]any)
	var out []container
	for _, item := range list {
		c := item.(map[string]any)
		env := map[string]string{}
		vars, _ := c["env"].([]any)
		for _, v := range vars {
			e := v.(map[string]any)
			env[e["name"].(string)] = envValue(e)
		}
		var args []string
		list, _ := c["args"].([]any)
		for _, a := range list {
			args = append(args, varRef.ReplaceAllStringFunc(a.(string), func(ref string) string {
				if v, ok := env[ref[2:len(ref)-1]]; ok {
					return v
				}
				return ref // the kubelet leaves an unknown reference as it is
			}))
		}
		out = append(out, container{name: c["name"].(string), args: args})
	}
	return out
}

var varRef = regexp.MustCompile(`\$\([A-Za-z_][A-Za-z0-9_]*\)`)

// envValue is an env entry's value in a running pod: the literal, or for the downward
// API a value of the kind the kubelet gives.
func envValue(e map[string]any) string {
	if v, ok := e["value"].(string); ok {
		return v
	}
	switch helmtest.Dig(e, "valueFrom", "fieldRef", "fieldPath") {
	case "status.podIP":
		return "10.244.1.7"
	case "metadata.name":
		return "meridian-hubble-0"
	case "spec.nodeName":
		return "node-1"
	}
	return ""
}

// chartConfigFile writes the config.yaml of the chart's ConfigMap where the test can read it.
func chartConfigFile(t *testing.T, objs []map[string]any) string {
	t.Helper()
	for _, o := range objs {
		if o["kind"] == "ConfigMap" {
			if data, ok := helmtest.Dig(o, "data", "config.yaml").(string); ok {
				path := filepath.Join(t.TempDir(), "config.yaml")
				if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
				return path
			}
		}
	}
	t.Fatal("no ConfigMap with config.yaml rendered")
	return ""
}

// withConfigFile points -config.file at the rendered ConfigMap's copy.
func withConfigFile(args []string, path string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.HasPrefix(a, "-config.file=") {
			a = "-config.file=" + path
		}
		out[i] = a
	}
	return out
}
