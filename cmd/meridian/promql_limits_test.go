package main

import (
	"net/url"
	"strings"
	"testing"
)

// TestPromQLLimitsThroughTheServer: the query limits reach the ruler from their flags,
// and a step bomb and a nesting bomb sent to the served API (with the engine loaded in
// this process) are refused with errors naming their limits while the process serves on.
func TestPromQLLimitsThroughTheServer(t *testing.T) {
	base := startApp(t, testApp(t, append(serveArgs(t, "promqllimits"), "-ruler.query-max-subquery-steps=100", "-ruler.query-max-length=1000")...))
	for query, want := range map[string]string{
		"max_over_time(vector(1)[1h:1s])":                             "more than the limit of 100 (ruler.query_max_subquery_steps)",
		"vector(1)[1y:1ms]":                                           "more than the limit of 100 (ruler.query_max_subquery_steps)",
		strings.Repeat("(", 20000) + "1" + strings.Repeat(")", 20000): "more than the limit of 1000 (ruler.query_max_length)",
	} {
		body, code := get(t, base+"/prometheus/api/v1/query?"+url.Values{"query": {query}}.Encode(), "s3cret")
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("%.40s: %d %.300s", query, code, body)
		}
	}
	if body, code := get(t, base+"/prometheus/api/v1/query?query=max_over_time(vector(1)[1m:])", "s3cret"); code != 200 || !strings.Contains(body, `"status":"success"`) {
		t.Errorf("step-less subquery: %d %s", code, body)
	}
	if body, code := get(t, base+"/healthz", ""); code != 200 {
		t.Errorf("healthz after the bombs: %d %s", code, body)
	}
}
