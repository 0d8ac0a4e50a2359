package steering

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meridianhq/meridian/internal/httpmux"
	"github.com/meridianhq/meridian/internal/jsonbody"
)

// Handler serves the steering API (mount it behind the main server's token auth):
//
//	GET    /api/steering/weights          current weights (Weights as JSON)
//	GET    /api/steering/matrix           vantage × POP RTT and failure runs
//	GET    /api/steering/overrides        manual overrides in force
//	POST   /api/steering/overrides        add one: {"action":"drain|pin","pop":..,"service":..,"region":..,"reason":..}
//	DELETE /api/steering/overrides/{id}   remove one
//	GET    /api/steering/replay?from=T1&to=T2[&format=text|json|csv][&flap_window=5m][&warmup=15m]
//	POST   /api/steering/replay?...       the same, with a candidate configuration (YAML) as the body
//
// An override takes effect on the next tick (TickInterval).
func (e *Engine) Handler() http.Handler {
	mux := httpmux.New() // lists its routes, for the test that checks every route's guard
	mux.HandleFunc("GET /api/steering/weights", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Weights())
	})
	mux.HandleFunc("GET /api/steering/matrix", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.matrix.Cells(e.now().Add(-e.cfg.Stale)))
	})
	mux.HandleFunc("GET /api/steering/overrides", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.overrides.all())
	})
	mux.HandleFunc("POST /api/steering/overrides", func(w http.ResponseWriter, r *http.Request) {
		var o Override
		if err := jsonbody.DecodeRequest(w, r, 64<<10, &o); err != nil {
			e.refused.WithLabelValues("body").Inc()
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "override body: " + err.Error()})
			return
		}
		o.ID, o.Source, o.Created = "", "api", e.now()
		added, err := e.overrides.add(o)
		if err != nil {
			e.refused.WithLabelValues("override").Inc()
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "override: " + err.Error()})
			return
		}
		e.log.Info("override added", "id", added.ID, "action", added.Action, "pop", added.POP, "service", added.Service, "region", added.Region, "reason", added.Reason)
		writeJSON(w, http.StatusCreated, added)
	})
	mux.HandleFunc("DELETE /api/steering/overrides/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !e.overrides.remove(id) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no override %q", id)})
			return
		}
		e.log.Info("override removed", "id", id)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/steering/replay", e.serveReplay)
	mux.HandleFunc("POST /api/steering/replay", e.serveReplay)
	return mux
}

// maxCandidateBytes bounds a candidate configuration sent to the replay API.
const maxCandidateBytes = 64 << 10

func (e *Engine) serveReplay(w http.ResponseWriter, r *http.Request) {
	refuse := func(code int, err error) {
		e.refused.WithLabelValues("replay").Inc()
		writeJSON(w, code, map[string]string{"error": err.Error()})
	}
	if e.history == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "replay: no history store (storage does not run in this process)"})
		return
	}
	opt, format, err := replayQuery(r.URL.Query(), e.now())
	if err != nil {
		refuse(http.StatusBadRequest, err)
		return
	}
	if r.Method == http.MethodPost {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCandidateBytes))
		if err != nil {
			refuse(http.StatusBadRequest, fmt.Errorf("candidate configuration: %w", err))
			return
		}
		cand, err := LoadCandidate(e.cfg, e.inventory(), "candidate configuration", body)
		if err != nil {
			refuse(http.StatusBadRequest, err)
			return
		}
		opt.Candidate = &cand
	}
	res, err := Replay(r.Context(), e.history, e.cfg, e.inventory(), opt)
	switch {
	case errors.Is(err, ErrReplayInput):
		refuse(http.StatusBadRequest, err)
		return
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	e.replayed.set(res)
	w.Header().Set("Content-Type", map[string]string{"json": "application/json", "csv": "text/csv"}[format])
	if format == "text" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	res.Write(w, format)
}

// replayQuery reads a replay's parameters; times are RFC 3339 or a duration before now.
func replayQuery(q url.Values, now time.Time) (ReplayOptions, string, error) {
	var opt ReplayOptions
	var err error
	if opt.From, err = ParseReplayTime(q.Get("from"), now); err != nil {
		return opt, "", fmt.Errorf("from: %w", err)
	}
	if opt.To, err = ParseReplayTime(q.Get("to"), now); err != nil {
		return opt, "", fmt.Errorf("to: %w", err)
	}
	for name, d := range map[string]*time.Duration{"flap_window": &opt.FlapWindow, "warmup": &opt.Warmup} {
		if v := q.Get(name); v != "" {
			if *d, err = time.ParseDuration(v); err != nil || *d <= 0 {
				return opt, "", fmt.Errorf("%s %q: want a positive duration", name, v)
			}
		}
	}
	format := cmp.Or(q.Get("format"), "text")
	if !slices.Contains(ReplayFormats, format) {
		return opt, "", fmt.Errorf("format %q: want text, json or csv", format)
	}
	return opt, format, nil
}

// ParseReplayTime reads an RFC 3339 time, "now", or a duration meaning that long before now.
func ParseReplayTime(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "":
		return time.Time{}, errors.New("missing: want an RFC 3339 time (2026-12-02T03:00:00Z), now, or a duration ago (90m)")
	case s == "now":
		return now, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d.Abs()), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time (2026-12-02T03:00:00Z), now, or a duration ago (90m)", s)
	}
	return t, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// RequireToken guards h with a bearer token compared in constant time.
func RequireToken(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meridian-steering"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
