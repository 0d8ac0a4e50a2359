package main

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/meridianhq/meridian/dashboards/chhttp"
)

// access is how a route authenticates a request.
type access int

const (
	open       access = iota // nobody needs a credential (probes, /metrics, the page)
	apiToken                 // the server's bearer token, checked by the server
	mapToken                 // the same token, checked by the map itself (browsers' websockets)
	chPassword               // the ClickHouse endpoint's password, checked by it
)

// probe is one request to a route: its answer with the right credential is want; with no
// credential and a wrong one, every route but an open one answers 401 or 403.
type probe struct {
	method, path, body string
	access             access
	want               int // 0: not sent with the right credential (see the comment)
}

// routeTable classifies every pattern the server serves: the server's own patterns, or
// the patterns of a mounted handler that lists its own. TestEveryRouteIsGuarded fails on a
// pattern missing here, so a new route must be classified before it ships.
var routeTable = map[string][]probe{
	"GET /metrics":    {{"GET", "/metrics", "", open, 200}},
	"GET /healthz":    {{"GET", "/healthz", "", open, 200}},
	"GET /readyz":     {{"GET", "/readyz", "", open, 200}},
	"/-/reload":       {{"POST", "/-/reload", "", apiToken, 404}}, // no -config.file here
	"GET /config":     {{"GET", "/config", "", apiToken, 200}},
	"/collector/ring": {{"GET", "/collector/ring", "", apiToken, 200}},
	"/prometheus/": {
		{"GET", "/prometheus/api/v1/query?query=1", "", apiToken, 200},
		{"POST", "/prometheus/api/v1/query", "query=1", apiToken, 200},
		{"GET", "/prometheus/api/v1/rules", "", apiToken, 200},
		{"GET", "/prometheus/api/v1/alerts", "", apiToken, 200},
		{"GET", "/prometheus/api/v1/labels", "", apiToken, 200},
		{"GET", "/prometheus/api/v1/status/buildinfo", "", apiToken, 200},
		{"GET", "/prometheus/nope", "", apiToken, 404},
		// Refused without the token; not sent with it, as they dereference nil getters
		// (issue #25) and a fault would hang this process with the engine loaded.
		{"GET", "/prometheus/api/v1/notifications", "", apiToken, 0},
		{"GET", "/prometheus/api/v1/targets/relabel_steps", "", apiToken, 0},
	},
	"GET /api/steering/weights":           {{"GET", "/api/steering/weights", "", apiToken, 200}},
	"GET /api/steering/matrix":            {{"GET", "/api/steering/matrix", "", apiToken, 200}},
	"GET /api/steering/overrides":         {{"GET", "/api/steering/overrides", "", apiToken, 200}},
	"POST /api/steering/overrides":        {{"POST", "/api/steering/overrides", `{"action":"drain","pop":"no-such-pop"}`, apiToken, 400}},
	"DELETE /api/steering/overrides/{id}": {{"DELETE", "/api/steering/overrides/no-such-id", "", apiToken, 404}},
	"GET /api/steering/replay":            {{"GET", "/api/steering/replay?from=now&to=10m", "", apiToken, 400}}, // inverted
	"POST /api/steering/replay":           {{"POST", "/api/steering/replay?from=10m&to=now", "steering: {ramp_step: 2}", apiToken, 400}},
	"GET /map/ws":                         {{"GET", "/map/ws", "", mapToken, 400}}, // authorized, but not a websocket handshake
	"GET /map/api/snapshot":               {{"GET", "/map/api/snapshot", "", mapToken, 200}},
	"GET /map/api/history":                {{"GET", "/map/api/history", "", mapToken, 200}},
	"GET /map/":                           {{"GET", "/map/", "", open, 200}},
	"GET /map":                            {{"GET", "/map", "", open, 301}},
	"/clickhouse/": {
		{"GET", "/clickhouse/?query=SELECT%201", "", chPassword, 200},
		{"POST", "/clickhouse/", "SELECT 1", chPassword, 200},
		{"GET", "/clickhouse/ping", "", open, 200}, // as ClickHouse's own, for load balancers
	},
}

// TestEveryRouteIsGuarded runs every module, lists every pattern the HTTP server serves
// from its registrations, and sends each route's probes with no credential, a wrong one
// and the right one.
func TestEveryRouteIsGuarded(t *testing.T) {
	t.Setenv(chhttp.PasswordEnv, "chpass")
	a := testApp(t, append(serveArgs(t, "routes"), "-collector.ring.enabled",
		"-collector.ring.store=inmemory", "-collector.ring.instance-id=replica-1")...)
	base := startApp(t, a)

	served := map[string]bool{} // pattern -> mounted behind the server's token
	for _, r := range a.server.Routes() {
		if len(r.Sub) == 0 {
			served[r.Pattern] = r.Guarded
		}
		for _, p := range r.Sub {
			served[p] = r.Guarded
		}
	}
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range served {
			if !yield(p) {
				return
			}
		}
	}) {
		probes, ok := routeTable[p]
		if !ok {
			t.Errorf("route %q (behind the API token: %v) is not in routeTable: classify it and give it probes", p, served[p])
			continue
		}
		for _, pr := range probes {
			if (pr.access == apiToken) != served[p] {
				t.Errorf("route %q: behind the API token %v, but its probe %s %s takes access %d", p, served[p], pr.method, pr.path, pr.access)
			}
		}
	}
	for p := range routeTable {
		if _, ok := served[p]; !ok {
			t.Errorf("routeTable lists %q, which the server does not serve", p)
		}
	}

	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(pr probe, credential string) (int, string) {
		req, err := http.NewRequest(pr.method, base+pr.path, strings.NewReader(pr.body))
		if err != nil {
			t.Fatal(err)
		}
		if pr.method == "POST" && strings.HasPrefix(pr.path, "/prometheus/") {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if credential != "" {
			req.Header.Set("Authorization", "Bearer "+credential)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", pr.method, pr.path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	right := map[access]string{open: "s3cret", apiToken: "s3cret", mapToken: "s3cret", chPassword: "chpass"}
	for p, probes := range routeTable {
		for _, pr := range probes {
			name := p + ": " + pr.method + " " + pr.path
			for _, cred := range []string{"", "wrong"} {
				code, body := do(pr, cred)
				switch refused := code == 401 || code == 403; {
				case pr.access == open && (refused || code != pr.want):
					t.Errorf("%s with credential %q: %d %q, want %d (an open route)", name, cred, code, body, pr.want)
				case pr.access != open && !refused:
					t.Errorf("%s with credential %q: %d %q, want 401 or 403", name, cred, code, body)
				}
			}
			if pr.want == 0 {
				continue
			}
			if code, body := do(pr, right[pr.access]); code != pr.want {
				t.Errorf("%s with the right credential: %d %q, want %d", name, code, body, pr.want)
			}
		}
	}
}
