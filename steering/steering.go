// Package steering turns probe, SLO and override state into per-region POP weights and
// serves them: through the built-in authoritative GeoDNS (steering/authdns), as RFC 2136
// updates to an external server (steering/rfc2136), and as a snapshot for the map and
// metrics. See README.md.
package steering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/steering/authdns"
	"github.com/meridianhq/meridian/steering/locate"
	"github.com/meridianhq/meridian/steering/rfc2136"
	"github.com/meridianhq/meridian/steering/zone"
)

// Deps are what the steering module is given.
type Deps struct {
	Inventory  *inventory.Inventory // the world at start
	Live       inventory.View       // its changes, applied at the next tick; nil: fixed
	Appender   pipeline.Appender    // SteeringDecision records go here
	Alerts     alerts.Source        // may be nil
	History    History              // recorded inputs and decisions for /api/steering/replay; may be nil
	Load       LoadSource           // each POP's measured load; nil: the HAProxyStat records Consume folds
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Steering is the whole module. It is a pipeline.Consumer of Probe and HAProxyStat records.
type Steering struct {
	services.Service
	*Engine
	DNS       *authdns.Server    // nil when cfg.DNS.Listen is empty
	Publisher *rfc2136.Publisher // nil when cfg.RFC2136.Server is empty

	cfg     Config
	locator *locate.Locator // the first one: every one made from it shares its GeoIP database
	api     *http.Server
	log     *slog.Logger
}

var (
	_ pipeline.Consumer = (*Steering)(nil)
	_ authdns.Policy    = (*Engine)(nil)
	_ rfc2136.Source    = (*Engine)(nil)
)

// New builds the module; it starts its listeners when started as a service.
func New(cfg Config, d Deps) (*Steering, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	eng, err := NewEngine(cfg, d.Inventory, d.Appender, d.Alerts, d.Logger, d.Registerer)
	if err != nil {
		return nil, err
	}
	eng.history = d.History
	eng.live = d.Live
	if d.Live != nil {
		eng.applied = d.Live.Snapshot().Version()
	}
	if d.Load != nil {
		eng.load = d.Load
	}
	s := &Steering{Engine: eng, cfg: cfg, log: d.Logger.With("component", "steering")}
	svcNames := serviceNames(d.Inventory)
	if cfg.DNS.Listen != "" {
		z, err := zone.New(cfg.DNS.Zone, svcNames)
		if err != nil {
			return nil, fmt.Errorf("steering.dns.zone: %w", err)
		}
		s.locator, err = locate.New(d.Inventory.ClientRegions, cfg.DNS.GeoIPDB)
		if err != nil {
			return nil, fmt.Errorf("steering.dns: %w", err)
		}
		if s.DNS, err = authdns.New(cfg.DNS, authdns.Deps{Table: authdns.Table{Zone: z, Locator: s.locator}, Policy: eng, Logger: d.Logger, Registerer: d.Registerer}); err != nil {
			s.locator.Close()
			return nil, err
		}
	}
	if cfg.RFC2136.Server != "" {
		names := rfc2136.Names(svcNames, eng.regions, DefaultRegion)
		if s.Publisher, err = rfc2136.New(cfg.RFC2136, rfc2136.Deps{Source: eng, Names: names, Logger: d.Logger, Registerer: d.Registerer}); err != nil {
			if s.locator != nil {
				s.locator.Close()
			}
			return nil, err
		}
	}
	eng.invVersion.WithLabelValues("engine").Set(float64(eng.applied))
	if s.DNS != nil {
		eng.invVersion.WithLabelValues("dns").Set(float64(eng.applied))
	}
	if s.Publisher != nil {
		eng.invVersion.WithLabelValues("rfc2136").Set(float64(eng.applied))
	}
	eng.followed = s.follow
	if cfg.APIListen != "" {
		token, err := apiToken(cfg.APITokenFile)
		if err != nil {
			return nil, err
		}
		s.api = &http.Server{Addr: cfg.APIListen, Handler: RequireToken(token, eng.Handler()), ReadHeaderTimeout: 5 * time.Second}
	}
	s.Service = services.NewBasicService(s.starting, eng.run, s.stopping).WithName("steering")
	return s, nil
}

// serviceNames are the names the zone and the RFC 2136 names are made of.
func serviceNames(inv *inventory.Inventory) []string {
	out := make([]string, len(inv.Services))
	for i, v := range inv.Services {
		out[i] = v.Name
	}
	return out
}

// follow makes the GeoDNS's zone and client regions and the RFC 2136 names those of
// snap, which the engine has just applied, answer table included: DNS never names a
// service or region the engine has no answer set for yet. Each part checks its whole
// new table first and keeps its last good one when any entry is bad.
func (s *Steering) follow(snap *inventory.Snapshot) {
	inv, v := snap.Inventory(), snap.Version()
	svcs := serviceNames(inv)
	if s.DNS != nil {
		t := s.DNS.Table()
		z, zerr := t.Zone.WithServices(svcs)
		l, lerr := s.locator.WithRegions(inv.ClientRegions)
		if s.inventoryApplied("dns", v, errors.Join(zerr, lerr)) == nil {
			s.DNS.Swap(authdns.Table{Zone: z, Locator: l})
		}
	}
	if s.Publisher != nil {
		s.mu.Lock()
		regions := s.regions
		s.mu.Unlock()
		s.inventoryApplied("rfc2136", v, s.Publisher.SetNames(rfc2136.Names(svcs, regions, DefaultRegion)))
	}
}

// APITokenEnv holds the override API's token when api_token_file is not set.
const APITokenEnv = "MERIDIAN_STEERING_API_TOKEN"

func apiToken(file string) (string, error) {
	t, err := secret.Read(secret.Source{File: file, Env: APITokenEnv, Field: "steering.api_token_file"})
	if err == nil && t.Empty() {
		err = errors.New("steering.api_listen: a token is required (steering.api_token_file or $" + APITokenEnv + ")")
	}
	return t.Reveal(), err
}

func (s *Steering) subservices() []services.Service {
	var out []services.Service
	if s.DNS != nil {
		out = append(out, s.DNS)
	}
	if s.Publisher != nil {
		out = append(out, s.Publisher)
	}
	return out
}

func (s *Steering) starting(ctx context.Context) error {
	for _, sub := range s.subservices() {
		// Not ctx: dskit cancels it when stopping begins, which would stop the DNS server
		// behind our back while stopping still closes what it uses. stopping ends them.
		if err := services.StartAndAwaitRunning(context.Background(), sub); err != nil {
			s.stopping(nil)
			return err
		}
	}
	if s.api != nil {
		l, err := net.Listen("tcp", s.api.Addr)
		if err != nil {
			s.stopping(nil)
			return fmt.Errorf("steering.api_listen %s: %w", s.api.Addr, err)
		}
		go s.api.Serve(l)
		s.log.Info("steering API listening", "addr", l.Addr().String())
	}
	return nil
}

func (s *Steering) stopping(error) error {
	var errs []error
	if s.api != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, s.api.Shutdown(ctx))
		cancel()
	}
	for _, sub := range s.subservices() {
		sub.StopAsync()
		if err := sub.AwaitTerminated(context.Background()); err != nil && sub.State() != services.New {
			errs = append(errs, err)
		}
	}
	if s.locator != nil {
		errs = append(errs, s.locator.Close())
	}
	return errors.Join(errs...)
}
