// Package shard spreads collector targets (Hubble relays, WireGuard exporters) over the
// collector replicas that share a dskit ring, as Mimir's compactors and store-gateways
// share their work: each replica registers in the ring (over memberlist by default) and
// owns a target when the target's hash falls on one of its tokens. A replica that stops
// leaves the ring at once; one that dies is forgotten by the others after a few missed
// heartbeats, and its targets move to them.
package shard

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/grafana/dskit/dns"
	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/kv/memberlist"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/internal/kitlog"
)

// Config is the collector ring (yaml `collector_ring`, flags -collector.ring.*).
type Config struct {
	Enabled          bool          `yaml:"enabled"`
	InstanceID       string        `yaml:"instance_id"`
	HeartbeatPeriod  time.Duration `yaml:"heartbeat_period"`
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout"`
	// A replica that keeps its entry at shutdown and its tokens in a file gets the same
	// targets back when it restarts, instead of handing them to the others and back.
	UnregisterOnShutdown bool                `yaml:"unregister_on_shutdown"`
	TokensFilePath       string              `yaml:"tokens_file_path"`
	KVStore              kv.Config           `yaml:"kvstore"`
	Memberlist           memberlist.KVConfig `yaml:"memberlist"`
}

const (
	ringName = "collectors"
	ringKey  = "collectors"
	// numTokens per replica: enough for an even spread over a few replicas.
	numTokens = 128
	// forgetAfter is how many heartbeat timeouts a dead replica stays in the ring.
	forgetAfter = 2
)

// RegisterFlags registers -collector.ring.* with their defaults: off; memberlist.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	host, _ := os.Hostname()
	f.BoolVar(&c.Enabled, "collector.ring.enabled", false, "Shard collector targets (Hubble relays, WireGuard exporters) over the replicas that share this ring; off: this replica collects every target.")
	f.StringVar(&c.InstanceID, "collector.ring.instance-id", host, "This replica's name in the ring.")
	f.DurationVar(&c.HeartbeatPeriod, "collector.ring.heartbeat-period", 5*time.Second, "How often this replica renews its entry in the ring.")
	f.DurationVar(&c.HeartbeatTimeout, "collector.ring.heartbeat-timeout", time.Minute, "A replica silent this long is unhealthy; after twice that its targets move to the others.")
	f.BoolVar(&c.UnregisterOnShutdown, "collector.ring.unregister-on-shutdown", true, "Leave the ring at shutdown, so the others take this replica's targets at once. Off (with a tokens file) for rolling restarts: the targets wait for this replica to come back, unless it stays away longer than twice the heartbeat timeout.")
	f.StringVar(&c.TokensFilePath, "collector.ring.tokens-file-path", "", "File keeping this replica's ring tokens across restarts, so it owns the same targets again (empty: new tokens at each start).")
	c.KVStore.Store = "memberlist"
	c.KVStore.RegisterFlagsWithPrefix("collector.ring.", "collectors/", f)
	c.Memberlist.RegisterFlagsWithPrefix(f, "collector.ring.")
	// dskit binds to 0.0.0.0 when no address is given; here that default is loopback (New).
	f.Lookup("collector.ring.memberlist.bind-addr").Usage = "IP address to listen on for gossip messages; repeat for several. Default " + DefaultBindAddr + ": set the pod's or host's IP for replicas on other machines, or 0.0.0.0 to bind every interface (then with TLS where the network is not trusted)."
}

// DefaultBindAddr is where the gossip listener binds unless told otherwise: like every
// other Meridian listener, only this machine can reach it until it is configured.
const DefaultBindAddr = "127.0.0.1"

// Validate names the field at fault.
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	switch {
	case c.InstanceID == "":
		return errors.New("collector_ring.instance_id: empty")
	case c.HeartbeatPeriod <= 0:
		return errors.New("collector_ring.heartbeat_period: must be positive")
	case c.HeartbeatTimeout <= c.HeartbeatPeriod:
		return errors.New("collector_ring.heartbeat_timeout: must be longer than heartbeat_period")
	}
	return nil
}

// Owner decides which targets a collector replica collects; *Ring is one. Collectors
// take nil as "every target".
type Owner interface {
	Owns(target string) bool
}

// Ring is this replica's membership of the collector ring. It is a dskit service; Owns
// answers once it runs.
type Ring struct {
	services.Service
	id          string
	lifecycler  *ring.BasicLifecycler
	ring        *ring.Ring
	subservices *services.Manager
}

// op counts only ACTIVE replicas: a target belongs to the first one on its hash.
var op = ring.NewOp([]ring.InstanceState{ring.ACTIVE}, nil)

// Deps are what the ring uses besides its configuration.
type Deps struct {
	Logger     *slog.Logger // nil: discard
	Registerer prometheus.Registerer
}

// New joins the ring described by cfg (which must be enabled).
func New(cfg Config, d Deps) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	logger, reg := kitlog.New(d.Logger), d.Registerer
	var subs []services.Service
	if cfg.KVStore.Store == "memberlist" {
		ml := cfg.Memberlist
		if len(ml.TCPTransport.BindAddrs) == 0 {
			ml.TCPTransport.BindAddrs = []string{DefaultBindAddr}
		}
		ml.NodeName = cfg.InstanceID
		ml.Codecs = append(ml.Codecs, ring.GetCodec())
		kvs := memberlist.NewKVInitService(&ml, logger, dns.NewProvider(dns.GolangResolverType, 0, logger, reg), reg)
		cfg.KVStore.MemberlistKV = kvs.GetMemberlistKV
		subs = append(subs, kvs)
	}
	store, err := kv.NewClient(cfg.KVStore, ring.GetCodec(), kv.RegistererWithKVName(reg, "collector-lifecycler"), logger)
	if err != nil {
		return nil, fmt.Errorf("collector_ring.kvstore: %w", err)
	}
	var delegate ring.BasicLifecyclerDelegate = ring.NewInstanceRegisterDelegate(ring.ACTIVE, numTokens)
	delegate = ring.NewLeaveOnStoppingDelegate(delegate, logger)
	delegate = ring.NewTokensPersistencyDelegate(cfg.TokensFilePath, ring.ACTIVE, delegate, logger)
	delegate = ring.NewAutoForgetDelegate(forgetAfter*cfg.HeartbeatTimeout, delegate, logger)
	lc, err := ring.NewBasicLifecycler(ring.BasicLifecyclerConfig{
		ID: cfg.InstanceID, Addr: cfg.InstanceID, HeartbeatPeriod: cfg.HeartbeatPeriod,
		HeartbeatTimeout: cfg.HeartbeatTimeout, NumTokens: numTokens,
		KeepInstanceInTheRingOnShutdown: !cfg.UnregisterOnShutdown,
	}, ringName, ringKey, store, delegate, logger, reg)
	if err != nil {
		return nil, err
	}
	rc, err := ring.New(ring.Config{KVStore: cfg.KVStore, HeartbeatTimeout: cfg.HeartbeatTimeout, ReplicationFactor: 1},
		ringName, ringKey, logger, reg)
	if err != nil {
		return nil, err
	}
	r := &Ring{id: cfg.InstanceID, lifecycler: lc, ring: rc}
	if r.subservices, err = services.NewManager(append(subs, lc, rc)...); err != nil {
		return nil, err
	}
	r.Service = services.NewIdleService(r.starting, r.stopping).WithName("collector-ring")
	return r, nil
}

// starting runs the subservices on a context of their own: ctx ends when stopping
// begins, and would stop them all at once instead of in stopping's order.
func (r *Ring) starting(ctx context.Context) error {
	err := r.subservices.StartAsync(context.Background())
	if err == nil {
		err = r.subservices.AwaitHealthy(ctx)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("collector ring: %w", err), services.StopManagerAndAwaitStopped(context.Background(), r.subservices))
	}
	return nil
}

// stopping stops the lifecycler first: its last word to the ring (leaving, or LEAVING
// and kept) must be gossiped before memberlist goes, or the others learn of it only when
// they forget this replica.
func (r *Ring) stopping(error) error {
	err := services.StopAndAwaitTerminated(context.Background(), r.lifecycler)
	return errors.Join(err, services.StopManagerAndAwaitStopped(context.Background(), r.subservices))
}

// ServeHTTP is the ring's status page (dskit's): the replicas, their state, heartbeat
// and share of the tokens, and a button to forget a dead one.
func (r *Ring) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.ring.ServeHTTP(w, req) }

// Owns reports whether this replica collects the target named key. Before the ring
// holds any ACTIVE replica, or while this one is not ACTIVE, it owns nothing.
func (r *Ring) Owns(key string) bool {
	h := fnv.New32a()
	h.Write([]byte(key))
	rs, err := r.ring.Get(h.Sum32(), op, nil, nil, nil)
	return err == nil && len(rs.Instances) == 1 && rs.Instances[0].Id == r.id
}
