// Package amtest runs Debian's real Alertmanager for tests, with a webhook receiver that
// records every notification it is sent.
package amtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/wait"
)

// Message is one webhook notification (Alertmanager's webhook format, version 4).
type Message struct {
	Status      string            `json:"status"`
	GroupLabels map[string]string `json:"groupLabels"`
	Alerts      []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"alerts"`
}

// Webhook is the receiver: an HTTP server on 127.0.0.1 recording notifications.
type Webhook struct {
	URL  string
	mu   sync.Mutex
	msgs []Message
}

func (h *Webhook) serveHTTP(w http.ResponseWriter, r *http.Request) {
	var m Message
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
}

// Find returns the first notification with status (firing or resolved) carrying an
// alert of that status whose labels include every one in match.
func (h *Webhook) Find(status string, match map[string]string) (Message, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if m.Status != status {
			continue
		}
	alerts:
		for _, a := range m.Alerts {
			if a.Status != status {
				continue
			}
			for k, v := range match {
				if a.Labels[k] != v {
					continue alerts
				}
			}
			return m, true
		}
	}
	return Message{}, false
}

// Messages returns every notification received so far.
func (h *Webhook) Messages() []Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Message(nil), h.msgs...)
}

// NewWebhook serves a webhook receiver on 127.0.0.1 until the test ends.
func NewWebhook(t testing.TB) *Webhook {
	hook := &Webhook{}
	srv := httptest.NewServer(http.HandlerFunc(hook.serveHTTP))
	t.Cleanup(srv.Close)
	hook.URL = srv.URL
	return hook
}

// Start runs an Alertmanager on a free 127.0.0.1 port, routing to a new Webhook; it
// returns the Alertmanager's base URL.
func Start(t testing.TB) (string, *Webhook) {
	t.Helper()
	hook := NewWebhook(t)
	port := FreePort(t)
	Run(t, port, hook)
	return fmt.Sprintf("http://127.0.0.1:%d", port), hook
}

// Run runs prometheus-alertmanager on 127.0.0.1:port, routing every alert to hook with
// second-scale grouping (by alertname and pop), until the test ends; it returns once the
// Alertmanager is ready.
func Run(t testing.TB, port int, hook *Webhook) {
	t.Helper()
	bin, err := exec.LookPath("prometheus-alertmanager")
	if err != nil {
		t.Fatal("prometheus-alertmanager not found: install Debian package prometheus-alertmanager (make apt-test)")
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`route:
  receiver: hook
  group_by: [alertname, pop]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: %s
        send_resolved: true
`, hook.URL)
	if err := os.WriteFile(filepath.Join(dir, "am.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "am.yml"), "--storage.path="+dir,
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--cluster.listen-address=", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	url := fmt.Sprintf("http://127.0.0.1:%d/-/ready", port)
	wait.For(t, 20*time.Second, "alertmanager "+url, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
