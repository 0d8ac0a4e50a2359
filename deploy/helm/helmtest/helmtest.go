// Package helmtest renders Meridian's Helm chart (deploy/helm/meridian) with the helm
// binary `make k8s-tools` builds, for the chart's own tests and for cmd/meridian's test
// that the rendered flags are Meridian's.
package helmtest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/internal/kubetest"
)

// Chart is the chart's directory, relative to Dir.
const Chart = "meridian"

// KubeVersion is the API server the chart is proven against; helm built from source
// (without release ldflags) would otherwise assume v1.20.
const KubeVersion = "v1.34.4"

// ValueSets are the values files the chart is proven with, relative to Dir; "" is the
// defaults.
var ValueSets = map[string]string{
	"defaults":     "",
	"multi-region": "examples/multi-region.yaml",
}

// Dir is deploy/helm, where helm runs, whichever package's test calls it.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// Tools returns the k8s tools directory after checking that it holds what the test needs.
func Tools(t testing.TB, needs ...string) string { return kubetest.Tools(t, needs...) }

// Helm runs the helm binary in Dir; its own caches and config stay in a temporary home.
func Helm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(Tools(t, "bin/helm"), "bin/helm"), args...)
	cmd.Dir = Dir()
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

// ValuesArgs is helm's -f for a values file of ValueSets.
func ValuesArgs(file string) []string {
	if file == "" {
		return nil
	}
	return []string{"-f", file}
}

// Render runs helm template with a values file of ValueSets and --set values, and
// splits the output into objects.
func Render(t testing.TB, file, namespace string, set ...string) []map[string]any {
	t.Helper()
	args := append([]string{"template", "meridian", Chart, "--kube-version", KubeVersion, "--namespace", namespace}, ValuesArgs(file)...)
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := Helm(t, args...)
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

// Dig follows keys through a rendered object; nil where one is missing.
func Dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}
