package jsonbody

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type msg struct {
	A string `json:"a"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		body, err string
	}{
		{`{"a":"x"}`, ""},
		{" {\"a\":\"x\"} \n\t", ""},
		{`{"a":"x"}{"a":"y"}`, "trailing data"},
		{`{"a":"x"} garbage`, "trailing data"},
		{`{"a":"x"}]`, "trailing data"},
		{`{"a":"x"} 1`, "trailing data"},
		{`{"b":"x"}`, `unknown field "b"`},
		{`{"a":`, "unexpected EOF"},
		{``, "empty body"},
		{`[1]`, "cannot unmarshal array"},
	} {
		var m msg
		err := Decode(strings.NewReader(tc.body), &m)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Decode(%q) = %v, want error containing %q", tc.body, err, tc.err)
		}
		if tc.err == "" && m.A != "x" {
			t.Errorf("Decode(%q) gave %+v", tc.body, m)
		}
	}
}

func TestDecodeRequestLimit(t *testing.T) {
	body := `{"a":"` + strings.Repeat("x", 100) + `"}`
	for _, tc := range []struct {
		limit int64
		err   string
	}{{int64(len(body)), ""}, {int64(len(body)) - 1, "body exceeds 107 bytes"}} {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		var m msg
		err := DecodeRequest(httptest.NewRecorder(), r, tc.limit, &m)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || err.Error() != tc.err) {
			t.Errorf("limit %d: %v, want %q", tc.limit, err, tc.err)
		}
	}
}
