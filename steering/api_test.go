package steering

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestOverrideBodyIsStrict: a body is one JSON object and nothing else, with a bounded
// reason; whatever else is refused with 400 and a message saying why, and adds nothing.
func TestOverrideBodyIsStrict(t *testing.T) {
	h := newHarness(t)
	srv := httptest.NewServer(h.e.Handler())
	t.Cleanup(srv.Close)
	post := func(body string) (int, string) {
		resp, err := http.Post(srv.URL+"/api/steering/overrides", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Error
	}
	drain := `{"action":"drain","pop":"nyc"}`
	for _, tc := range []struct{ name, body, want string }{
		{"second object", drain + `{"action":"pin","pop":"lon"}`, "trailing data"},
		{"trailing garbage", drain + "garbage", "trailing data"},
		{"trailing bracket", drain + "]", "trailing data"},
		{"unknown field", `{"action":"drain","pop":"nyc","bogus":1}`, `unknown field "bogus"`},
		{"empty", "", "empty body"},
		{"60 KB reason", `{"action":"drain","pop":"nyc","reason":"` + strings.Repeat("r", 60<<10) + `"}`, "reason is 61440 bytes, at most 1024 allowed"},
		{"oversized body", `{"action":"drain","pop":"nyc","reason":"` + strings.Repeat("r", 70<<10) + `"}`, "body exceeds 65536 bytes"},
	} {
		code, msg := post(tc.body)
		if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %q, want 400 with %q", tc.name, code, msg, tc.want)
		}
	}
	if got := h.e.overrides.all(); len(got) != 0 {
		t.Fatalf("refused bodies added overrides: %+v", got)
	}
	reason := strings.Repeat("r", MaxReasonBytes)
	if code, msg := post(`{"action":"drain","pop":"nyc","reason":"` + reason + `"}` + "\n"); code != http.StatusCreated {
		t.Fatalf("a %d-byte reason and a trailing newline: %d %q, want 201", len(reason), code, msg)
	}
	if got := h.e.overrides.all(); len(got) != 1 || got[0].Reason != reason {
		t.Fatalf("overrides %+v, want the one drain", got)
	}
}
