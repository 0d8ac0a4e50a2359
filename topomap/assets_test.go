package topomap

import (
	"net/http"
	"strings"
	"testing"
)

// The page and its files are sent with the policy that forbids framing (clickjacking);
// TestBrowserMap shows the page works within it.
func TestPagePolicy(t *testing.T) {
	_, srv := startMap(t, testConfig(), labInventory(), nil)
	for _, p := range []string{"/map/", "/map/app.js"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy || !strings.Contains(got, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", p, got)
		}
	}
}
