// Package jsonbody is the one way Meridian decodes a JSON message it receives (an API
// request body, a websocket message): exactly one JSON value, no unknown fields, no
// trailing data, within a size bound. A lenient decoder would silently accept
// `{"action":"drain",...}{"action":"pin",...}` and act on half of it.
package jsonbody

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Decode reads exactly one JSON value from r into v. Fields v does not have, and anything
// but white space after the value, are errors.
func Decode(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body, want a JSON object")
		}
		return err
	}
	// A second Decode sees only the trailing bytes: io.EOF when there are none.
	if err := dec.Decode(&json.RawMessage{}); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// DecodeRequest decodes r's body as Decode does, refusing a body over limit bytes (the
// connection is then closed instead of reading the rest).
func DecodeRequest(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	err := Decode(http.MaxBytesReader(w, r.Body, limit), v)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return fmt.Errorf("body exceeds %d bytes", limit)
	}
	return err
}
