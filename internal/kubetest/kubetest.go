// Package kubetest starts a real kube-apiserver over a real etcd on loopback for tests,
// from the binaries scripts/k8s-tools.sh builds, and talks to it over plain REST.
// No kubelet, scheduler or controller-manager runs: objects are validated and stored,
// pods never start.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
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

	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/internal/wait"
)

// EnvTools names the directory scripts/k8s-tools.sh fills (bin/helm, bin/kube-apiserver,
// bin/etcd, crds/); the default is ~/.cache/meridian/k8s-v1.34.4.
const EnvTools = "MERIDIAN_K8S_TOOLS"

// Tools returns the tools directory after checking that it holds what the test needs.
func Tools(t testing.TB, needs ...string) string {
	t.Helper()
	dir := os.Getenv(EnvTools)
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "meridian", "k8s-v1.34.4")
	}
	for _, p := range needs {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("%s missing: run `make k8s-tools` (scripts/k8s-tools.sh builds helm, kube-apiserver and etcd from the Go module proxy into %s, or set %s)", p, dir, EnvTools)
		}
	}
	return dir
}

// Server is a running kube-apiserver with an admin token and a token bound to no role.
type Server struct {
	URL   string
	Token string
	// NoRoleToken authenticates a user no role grants anything: every request is refused
	// (403), for RBAC tests.
	NoRoleToken string
	// CA is the PEM of the server's self-signed certificate.
	CA     []byte
	Client *http.Client
	// resources maps "group/version/Kind" to its REST path segment and scope.
	resources map[string]resource
	// bin and args start the API server again after StopAPI.
	bin, args []string
	stop      func()
}

type resource struct {
	name       string
	namespaced bool
}

// Start starts etcd and kube-apiserver and waits until the API server is ready. Both are
// killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	tools := Tools(t, "bin/kube-apiserver", "bin/etcd")
	dir := t.TempDir()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", amtest.FreePort(t))
	startProc(t, "etcd", filepath.Join(tools, "bin/etcd"), "-dir", filepath.Join(dir, "etcd"),
		"-client-url", etcdURL, "-peer-url", fmt.Sprintf("http://127.0.0.1:%d", amtest.FreePort(t)))
	wait.For(t, time.Minute, "etcd /health", func() error {
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
	tok2 := make([]byte, 16)
	rand.Read(tok2)
	s := &Server{Token: hex.EncodeToString(tok), NoRoleToken: hex.EncodeToString(tok2)}
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(s.Token+",meridian-test,meridian-test,system:masters\n"+s.NoRoleToken+",meridian-nobody,meridian-nobody\n"))
	port := amtest.FreePort(t)
	certs := filepath.Join(dir, "certs")
	s.bin = []string{filepath.Join(tools, "bin/kube-apiserver")}
	s.args = []string{"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port), "--cert-dir=" + certs,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + saKey, "--service-account-signing-key-file=" + saKey,
		"--token-auth-file=" + tokens, "--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/16", "--shutdown-delay-duration=0s",
		"--enable-priority-and-fairness=false", "--profiling=false"}
	s.stop = startProc(t, "kube-apiserver", s.bin[0], s.args...)
	s.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	// The server generates its self-signed certificate at start; trust exactly it once it
	// is there.
	pool := x509.NewCertPool()
	wait.For(t, 2*time.Minute, "kube-apiserver's certificate", func() error {
		crt, err := os.ReadFile(filepath.Join(certs, "apiserver.crt"))
		if err != nil {
			return err
		}
		if !pool.AppendCertsFromPEM(crt) {
			return errors.New("apiserver.crt holds no certificate yet")
		}
		s.CA = crt
		return nil
	})
	s.Client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	s.waitReady(t)
	return s
}

func (s *Server) waitReady(t testing.TB) {
	t.Helper()
	wait.For(t, 3*time.Minute, "kube-apiserver /readyz", func() error {
		code, body, err := s.Do("GET", "/readyz", "", nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})
}

// StopAPI kills the API server (etcd keeps the objects), for outage tests.
func (s *Server) StopAPI() { s.stop() }

// StartAPI starts the API server again on the same address and certificate after
// StopAPI, and waits until it is ready.
func (s *Server) StartAPI(t testing.TB) {
	t.Helper()
	s.stop = startProc(t, "kube-apiserver", s.bin[0], s.args...)
	s.waitReady(t)
}

// Kubeconfig writes a kubeconfig for the admin token and returns its path.
func (s *Server) Kubeconfig(t testing.TB) string {
	t.Helper()
	return s.KubeconfigFor(t, s.Token)
}

// KubeconfigFor writes a kubeconfig for token (Token or NoRoleToken) and returns its path.
func (s *Server) KubeconfigFor(t testing.TB, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	writeFile(t, path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, s.URL, b64(s.CA), token)))
	return path
}

// Do sends one request with the admin token.
func (s *Server) Do(method, path, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Discover reads the server's discovery documents; call it again after installing CRDs.
func (s *Server) Discover(t testing.TB) {
	t.Helper()
	s.resources = map[string]resource{}
	groupVersions := []string{"v1"}
	var groups struct {
		Groups []struct {
			Versions []struct {
				GroupVersion string `json:"groupVersion"`
			} `json:"versions"`
		} `json:"groups"`
	}
	s.GetJSON(t, "/apis", &groups)
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
		s.GetJSON(t, path, &list)
		for _, r := range list.Resources {
			if !strings.Contains(r.Name, "/") { // not a subresource
				s.resources[gv+"/"+r.Kind] = resource{r.Name, r.Namespaced}
			}
		}
	}
}

// Serves reports whether discovery has seen the kind ("group/version/Kind").
func (s *Server) Serves(gvk string) bool {
	_, ok := s.resources[gvk]
	return ok
}

// GetJSON GETs path and decodes it into v, failing the test on any error.
func (s *Server) GetJSON(t testing.TB, path string, v any) {
	t.Helper()
	code, body, err := s.Do("GET", path, "", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %v %d %s", path, err, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// ObjectPath is obj's REST path in namespace ns (for namespaced kinds).
func (s *Server) ObjectPath(obj map[string]any, ns string) (string, error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	name, _ := obj["metadata"].(map[string]any)["name"].(string)
	r, ok := s.resources[apiVersion+"/"+kind]
	if !ok {
		return "", fmt.Errorf("%s %s: the API server does not serve this kind (call Discover after installing its CRD)", apiVersion, kind)
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

// Apply server-side applies obj, with unknown or duplicate fields an error.
func (s *Server) Apply(obj map[string]any, ns string) error {
	path, err := s.ObjectPath(obj, ns)
	if err != nil {
		return err
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	code, resp, err := s.Do("PATCH", path+"?fieldManager=meridian-test&force=true&fieldValidation=Strict",
		"application/apply-patch+yaml", body)
	if err != nil {
		return err
	}
	if code != http.StatusOK && code != http.StatusCreated {
		return fmt.Errorf("apply %s: %d %s", path, code, resp)
	}
	return nil
}

// Get reads obj back.
func (s *Server) Get(obj map[string]any, ns string) (map[string]any, error) {
	path, err := s.ObjectPath(obj, ns)
	if err != nil {
		return nil, err
	}
	code, body, err := s.Do("GET", path, "", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", path, code, body)
	}
	var got map[string]any
	return got, json.Unmarshal(body, &got)
}

// Delete deletes obj; a missing object is not an error.
func (s *Server) Delete(obj map[string]any, ns string) error {
	path, err := s.ObjectPath(obj, ns)
	if err != nil {
		return err
	}
	code, body, err := s.Do("DELETE", path, "", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK && code != http.StatusAccepted && code != http.StatusNotFound {
		return fmt.Errorf("DELETE %s: %d %s", path, code, body)
	}
	return nil
}

// InstallCRD applies a CustomResourceDefinition, waits until it is established and
// served, and refreshes discovery.
func (s *Server) InstallCRD(t testing.TB, crd map[string]any) {
	t.Helper()
	if err := s.Apply(crd, ""); err != nil {
		t.Fatalf("CRD: %v", err)
	}
	name, _ := crd["metadata"].(map[string]any)["name"].(string)
	wait.For(t, time.Minute, "CRD "+name+" established", func() error {
		var got map[string]any
		s.GetJSON(t, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+name, &got)
		status, _ := got["status"].(map[string]any)
		conds, _ := status["conditions"].([]any)
		for _, c := range conds {
			c, _ := c.(map[string]any)
			if c["type"] == "Established" && c["status"] == "True" {
				return nil
			}
		}
		return errors.New("not established")
	})
	spec, _ := crd["spec"].(map[string]any)
	group, _ := spec["group"].(string)
	kind, _ := spec["names"].(map[string]any)["kind"].(string)
	versions, _ := spec["versions"].([]any)
	wait.For(t, time.Minute, "CRD "+name+" served", func() error {
		s.Discover(t)
		for _, v := range versions {
			v, _ := v.(map[string]any)
			if served, _ := v["served"].(bool); served && !s.Serves(group+"/"+v["name"].(string)+"/"+kind) {
				return fmt.Errorf("%s/%s %s not in discovery yet", group, v["name"], kind)
			}
		}
		return nil
	})
}

// startProc starts bin, killed at the end of the test or by the returned stop.
func startProc(t testing.TB, name, bin string, args ...string) (stop func()) {
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
	// SIGKILL: both would otherwise wait out their graceful shutdown.
	stop = func() { cmd.Process.Kill(); <-exited }
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("%s log (tail):\n%s", name, b)
		}
		log.Close()
	})
	return stop
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
