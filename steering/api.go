package steering

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

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
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "override body: " + err.Error()})
			return
		}
		o.ID, o.Source, o.Created = "", "api", e.now()
		added, err := e.overrides.add(o)
		if err != nil {
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
	return mux
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
