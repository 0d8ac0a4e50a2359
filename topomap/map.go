package topomap

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/internal/httpmux"
	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Map is the live map: a pipeline.Consumer that folds records into the graph, a service
// that ticks deltas out to websocket clients, and the HTTP routes of the page.
type Map struct {
	services.Service

	cfg      Config
	log      *slog.Logger
	token    secret.Value
	graph    *graph
	hub      *hub
	alerts   alerts.Source
	weights  WeightSource
	live     inventory.View // nil: the inventory does not change
	history  History
	metrics  *metrics
	stopping chan struct{}

	rebuildSem chan struct{}
}

var _ pipeline.Consumer = (*Map)(nil)

// Weight is one steering weight as the steering module reports it now.
type Weight struct {
	Service, Region, POP string
	Weight               float64
	Cause, Reason        string
	Since                time.Time // when the weight last changed
	RegretMs             float64   // the region's regret for the service (steering, "Regret")
}

// WeightSource gives steering's current weights. The map reads it every tick, so that a
// weight that does not change is still observed: steering records a decision only when a
// weight changes, and without this its arrows would age to unknown in a calm world.
type WeightSource interface {
	CurrentWeights() []Weight
}

// WeightsFunc adapts a function to WeightSource.
type WeightsFunc func() []Weight

// CurrentWeights calls f.
func (f WeightsFunc) CurrentWeights() []Weight { return f() }

// Deps are what the map reads besides its configuration.
type Deps struct {
	Inventory *inventory.Inventory
	// Live, when set, is followed: each change of the live inventory is applied to the
	// map at once (ApplyInventory), and its current snapshot replaces Inventory.
	Live    inventory.View
	Alerts  alerts.Source // nil: no alert overlay
	Weights WeightSource  // nil: steer arrows from decision records alone
	// APIToken is the server's API token. The map accepts it when it has no token of its
	// own (token_file, $MERIDIAN_TOPOMAP_TOKEN): one secret opens the API and the map.
	APIToken   secret.Value
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// New builds the map from the inventory.
func New(cfg Config, d Deps) (*Map, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	token, err := secret.Read(cfg.token())
	if err != nil {
		return nil, err
	}
	if token.Empty() {
		token = d.APIToken
	}
	inv, alertSrc, weights, logger, reg := d.Inventory, d.Alerts, d.Weights, d.Logger, d.Registerer
	if d.Live != nil {
		inv = d.Live.Snapshot().Inventory()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var epoch [8]byte
	rand.Read(epoch[:])
	m := &Map{
		cfg: cfg, log: logger.With("component", "topomap"), token: token, alerts: alertSrc, weights: weights, live: d.Live,
		graph: newGraph(inv, Rules{
			StaleAfter: cfg.StaleAfter, ExpireAfter: cfg.ExpireAfter, OSDLatencyDegraded: cfg.OSDLatencyDegraded,
			ProbeRTTDegraded: cfg.ProbeRTTDegraded, FlowErrorDegraded: cfg.FlowErrorDegraded,
		}, time.Now),
		hub:        newHub(hex.EncodeToString(epoch[:]), cfg.History, cfg.HistoryBytes),
		stopping:   make(chan struct{}),
		rebuildSem: make(chan struct{}, maxRebuilds),
	}
	if m.metrics, err = newMetrics(reg, m); err != nil {
		return nil, err
	}
	if token.Empty() && !cfg.Anonymous {
		m.log.Warn("no topomap token configured: the websocket and snapshot refuse every client; set -topomap.token-file, $" + TokenEnv + " or the API token")
	}
	m.tick() // clients connecting before the first tick see the inventory
	m.Service = services.NewBasicService(nil, m.running, m.stopped)
	return m, nil
}

// UseHistory lets the map rebuild past states from h (time travel). Call it before
// serving; without it, past instants are refused (501, or an error message).
func (m *Map) UseHistory(h History) { m.history = h }

// Consume folds records into the graph; changes go out on the next tick.
func (m *Map) Consume(recs []pipeline.Record) {
	m.graph.Consume(recs)
	m.metrics.records.Add(float64(len(recs)))
}

func (m *Map) running(ctx context.Context) error {
	tick := time.NewTicker(m.cfg.Tick)
	defer tick.Stop()
	// Ageing scans the whole graph: often enough to turn things unknown within ~5% of
	// stale_after, no more.
	age := time.NewTicker(min(max(m.cfg.StaleAfter/20, time.Second), 10*time.Second))
	defer age.Stop()
	poll := time.NewTicker(m.cfg.AlertPoll)
	defer poll.Stop()
	var changes <-chan *inventory.Snapshot
	if m.live != nil {
		ch, cancel := m.live.Subscribe()
		defer cancel()
		changes = ch
		if s := m.live.Snapshot(); s.Inventory() != m.graph.inventory() {
			m.ApplyInventory(s.Inventory()) // changed between New and start
		}
	}
	m.poll()
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-changes:
			m.ApplyInventory(s.Inventory())
		case <-tick.C:
			m.tick()
		case <-age.C:
			m.graph.age()
		case <-poll.C:
			m.poll()
		}
	}
}

func (m *Map) stopped(error) error {
	close(m.stopping)
	return nil
}

// poll reads the firing alerts, which no record carries.
func (m *Map) poll() {
	if m.alerts != nil {
		m.graph.applyAlerts(m.alerts.Firing())
	}
}

// tick publishes what changed since the last tick as one delta. Steering's weights are
// read first, every tick: a weight that does not change is still observed, and a change
// shows within a tick even when its decision record is late in the pipeline's queue
// behind a burst of flows.
func (m *Map) tick() {
	if m.weights != nil {
		m.graph.applyWeights(m.weights.CurrentWeights())
	}
	nodes, edges, rmNodes, rmEdges, since := m.graph.flush()
	now := time.Now()
	d, err := m.hub.publish(nodes, edges, rmNodes, rmEdges, now)
	if err != nil {
		m.log.Error("topomap: encoding delta", "err", err)
		return
	}
	if d == nil {
		return
	}
	m.metrics.deltas.Inc()
	m.metrics.deltaBytes.Observe(float64(len(d.data)))
	if !since.IsZero() {
		m.metrics.delay.Observe(now.Sub(since).Seconds())
	}
}

// RegisterRoutes mounts the page (/map/), the websocket (/map/ws) and the JSON snapshot
// (/map/api/snapshot) on mux (an *http.ServeMux, for one).
func (m *Map) RegisterRoutes(mux interface{ Handle(string, http.Handler) }) {
	mux.Handle("GET /map/ws", http.HandlerFunc(m.serveWS))
	mux.Handle("GET /map/api/snapshot", http.HandlerFunc(m.serveSnapshot))
	mux.Handle("GET /map/api/history", http.HandlerFunc(m.serveHistoryRange))
	mux.Handle("GET /map/", http.StripPrefix("/map/", assetHandler()))
	mux.Handle("GET /map", http.RedirectHandler("/map/", http.StatusMovedPermanently))
}

// Handler returns a mux with only the map's routes, which lists them (httpmux.Lister).
func (m *Map) Handler() http.Handler {
	mux := httpmux.New()
	m.RegisterRoutes(mux)
	return mux
}

// serveSnapshot answers the current graph as JSON, filtered like the websocket
// (?layers=&sites=&clusters=), with the same token rule; ?at= answers a past state.
func (m *Map) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	if !m.authorized(r) {
		m.metrics.rejected.WithLabelValues("auth").Inc()
		http.Error(w, "topomap: bad or missing token", http.StatusUnauthorized)
		return
	}
	f, err := filterFromQuery(r.URL.Query())
	if err != nil {
		http.Error(w, fmt.Sprintf("topomap snapshot: %v", err), http.StatusBadRequest)
		return
	}
	if at := r.URL.Query().Get("at"); at != "" {
		m.servePastSnapshot(w, r, f, at)
		return
	}
	msgs, err := m.hub.snapshot(nil, f)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(msgs[0]) // without a client, snapshot answers the current state alone
}
