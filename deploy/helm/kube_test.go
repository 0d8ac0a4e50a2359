package helm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/deploy/helm/helmtest"
	"github.com/meridianhq/meridian/internal/amtest"
)

// TestAppliedToAPIServer installs the Prometheus Operator's CRDs into a real
// kube-apiserver, then server-side applies every object each values set renders (unknown
// fields are errors) and reads each back.
func TestAppliedToAPIServer(t *testing.T) {
	dir := helmtest.Tools(t, "bin/helm", "bin/kube-apiserver", "bin/etcd", "crds/.done")
	started := time.Now()
	k := startKube(t, dir)
	t.Logf("kube-apiserver ready in %s", time.Since(started).Round(time.Second))

	crds, _ := filepath.Glob(filepath.Join(dir, "crds/*.yaml"))
	if len(crds) == 0 {
		t.Fatal("no CRD manifests in " + dir + "/crds")
	}
	k.discover(t)
	var crdNames []string
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd map[string]any
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := k.apply(crd, ""); err != nil {
			t.Fatalf("CRD %s: %v", filepath.Base(f), err)
		}
		crdNames = append(crdNames, helmtest.Dig(crd, "metadata", "name").(string))
	}
	for _, name := range crdNames {
		waitFor(t, "CRD "+name+" established", time.Minute, func() error {
			var crd map[string]any
			k.getJSON(t, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+name, &crd)
			conds, _ := helmtest.Dig(crd, "status", "conditions").([]any)
			for _, c := range conds {
				c := c.(map[string]any)
				if c["type"] == "Established" && c["status"] == "True" {
					return nil
				}
			}
			return errors.New("not established")
		})
	}
	waitFor(t, "monitoring.coreos.com/v1 discovery", time.Minute, func() error {
		k.discover(t)
		if _, ok := k.resources["monitoring.coreos.com/v1/PrometheusRule"]; !ok {
			return errors.New("PrometheusRule not served yet")
		}
		return nil
	})

	// The check has teeth: a misspelt field is refused, not dropped.
	typo := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "typo", "namespace": "default"}, "dataa": map[string]any{"k": "v"}}
	if err := k.apply(typo, "default"); err == nil || !strings.Contains(err.Error(), "dataa") {
		t.Fatalf("an unknown field was not refused: %v", err)
	}

	for name, file := range helmtest.ValueSets {
		t.Run(name, func(t *testing.T) {
			ns := "meridian-" + name
			if err := k.apply(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}, ""); err != nil {
				t.Fatal(err)
			}
			objs := helmtest.Render(t, file, ns)
			for _, o := range objs {
				id := o["kind"].(string) + "/" + helmtest.Dig(o, "metadata", "name").(string)
				if err := k.apply(o, ns); err != nil {
					t.Errorf("%s: %v", id, err)
					continue
				}
				got, err := k.get(o, ns)
				if err != nil {
					t.Errorf("%s: read back: %v", id, err)
					continue
				}
				if diff := subset(o, got, id); diff != "" {
					t.Errorf("stored object differs from the rendered one: %s", diff)
				}
			}
			t.Logf("%d objects applied and read back: %v", len(objs), kinds(objs))
		})
	}
}

// kube is a real kube-apiserver over a real etcd, both on loopback, with one admin token.
// No kubelet, scheduler or controller-manager runs: objects are validated and stored,
// pods never start.
type kube struct {
	url    string
	token  string
	client *http.Client
	// resources maps "group/version/Kind" to its REST path segment and scope.
	resources map[string]resource
}

type resource struct {
	name       string
	namespaced bool
}

// startKube starts etcd and kube-apiserver from tools/bin and waits until the API
// server is ready.
func startKube(t *testing.T, tools string) *kube {
	t.Helper()
	dir := t.TempDir()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", amtest.FreePort(t))
	startProc(t, "etcd", filepath.Join(tools, "bin/etcd"), "-dir", filepath.Join(dir, "etcd"),
		"-client-url", etcdURL, "-peer-url", fmt.Sprintf("http://127.0.0.1:%d", amtest.FreePort(t)))
	waitFor(t, "etcd /health", time.Minute, func() error {
		resp, err := http.Get(etcdURL + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"health":"true"`) {
			return fmt.Errorf("%s", b)
		}
		return nil
	})

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(dir, "sa.key")
	writeFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	tok := make([]byte, 16)
	rand.Read(tok)
	k := &kube{token: hex.EncodeToString(tok)}
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(k.token+",meridian-test,meridian-test,system:masters\n"))
	port := amtest.FreePort(t)
	certs := filepath.Join(dir, "certs")
	startProc(t, "kube-apiserver", filepath.Join(tools, "bin/kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port), "--cert-dir="+certs,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+saKey, "--service-account-signing-key-file="+saKey,
		"--token-auth-file="+tokens, "--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/16", "--shutdown-delay-duration=0s",
		"--enable-priority-and-fairness=false", "--profiling=false")
	k.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	// The server generates its self-signed certificate at start; trust exactly it once it
	// is there.
	pool := x509.NewCertPool()
	waitFor(t, "kube-apiserver's certificate", 2*time.Minute, func() error {
		crt, err := os.ReadFile(filepath.Join(certs, "apiserver.crt"))
		if err != nil {
			return err
		}
		if !pool.AppendCertsFromPEM(crt) {
			return errors.New("apiserver.crt holds no certificate yet")
		}
		return nil
	})
	k.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	waitFor(t, "kube-apiserver /readyz", 3*time.Minute, func() error {
		code, body, err := k.do("GET", "/readyz", "", nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})
	return k
}

func (k *kube) do(method, path, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, k.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// discover fills k.resources from the server's discovery documents.
func (k *kube) discover(t *testing.T) {
	t.Helper()
	k.resources = map[string]resource{}
	groupVersions := []string{"v1"}
	var groups struct {
		Groups []struct {
			Versions []struct {
				GroupVersion string `json:"groupVersion"`
			} `json:"versions"`
		} `json:"groups"`
	}
	k.getJSON(t, "/apis", &groups)
	for _, g := range groups.Groups {
		for _, v := range g.Versions {
			groupVersions = append(groupVersions, v.GroupVersion)
		}
	}
	for _, gv := range groupVersions {
		path := "/apis/" + gv
		if gv == "v1" {
			path = "/api/v1"
		}
		var list struct {
			Resources []struct {
				Name       string `json:"name"`
				Kind       string `json:"kind"`
				Namespaced bool   `json:"namespaced"`
			} `json:"resources"`
		}
		k.getJSON(t, path, &list)
		for _, r := range list.Resources {
			if !strings.Contains(r.Name, "/") { // not a subresource
				k.resources[gv+"/"+r.Kind] = resource{r.Name, r.Namespaced}
			}
		}
	}
}

func (k *kube) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, body, err := k.do("GET", path, "", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %v %d %s", path, err, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// objectPath is obj's REST path in namespace ns (for namespaced kinds).
func (k *kube) objectPath(obj map[string]any, ns string) (string, error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	name, _ := obj["metadata"].(map[string]any)["name"].(string)
	r, ok := k.resources[apiVersion+"/"+kind]
	if !ok {
		return "", fmt.Errorf("%s %s: the API server does not serve this kind", apiVersion, kind)
	}
	base := "/apis/" + apiVersion
	if !strings.Contains(apiVersion, "/") {
		base = "/api/" + apiVersion
	}
	if r.namespaced {
		base += "/namespaces/" + ns
	}
	return base + "/" + r.name + "/" + name, nil
}

// apply server-side applies obj, with unknown or duplicate fields an error.
func (k *kube) apply(obj map[string]any, ns string) error {
	path, err := k.objectPath(obj, ns)
	if err != nil {
		return err
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	code, resp, err := k.do("PATCH", path+"?fieldManager=meridian-chart-test&force=true&fieldValidation=Strict",
		"application/apply-patch+yaml", body)
	if err != nil {
		return err
	}
	if code != http.StatusOK && code != http.StatusCreated {
		return fmt.Errorf("apply %s: %d %s", path, code, resp)
	}
	return nil
}

// get reads obj back.
func (k *kube) get(obj map[string]any, ns string) (map[string]any, error) {
	path, err := k.objectPath(obj, ns)
	if err != nil {
		return nil, err
	}
	code, body, err := k.do("GET", path, "", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", path, code, body)
	}
	var got map[string]any
	return got, json.Unmarshal(body, &got)
}

func startProc(t *testing.T, name, bin string, args ...string) {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGKILL: both would otherwise wait out their graceful shutdown.
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("%s log (tail):\n%s", name, b)
		}
		log.Close()
	})
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
