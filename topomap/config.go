package topomap

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/grafana/dskit/flagext"

	"github.com/meridianhq/meridian/internal/secret"
)

// TokenEnv is the environment variable the map's own token is read from when token_file
// is not set.
const TokenEnv = "MERIDIAN_TOPOMAP_TOKEN"

// Config configures the live map.
type Config struct {
	Tick               time.Duration          `yaml:"tick"`
	AlertPoll          time.Duration          `yaml:"alert_poll"`
	StaleAfter         time.Duration          `yaml:"stale_after"`
	ExpireAfter        time.Duration          `yaml:"expire_after"`
	OSDLatencyDegraded time.Duration          `yaml:"osd_latency_degraded"`
	ProbeRTTDegraded   time.Duration          `yaml:"probe_rtt_degraded"`
	FlowErrorDegraded  float64                `yaml:"flow_error_degraded"`
	History            int                    `yaml:"history"`
	HistoryBytes       int                    `yaml:"history_bytes"`
	ClientBufferBytes  int                    `yaml:"client_buffer_bytes"`
	MaxMessageBytes    int                    `yaml:"max_message_bytes"`
	ClientTimeout      time.Duration          `yaml:"client_timeout"`
	TokenFile          string                 `yaml:"token_file" secret:"MERIDIAN_TOPOMAP_TOKEN"`
	Anonymous          bool                   `yaml:"anonymous"`
	AllowedOrigins     flagext.StringSliceCSV `yaml:"allowed_origins"`
}

// RegisterFlags registers the map's flags with the -topomap. prefix and sets defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.Tick, "topomap.tick", 250*time.Millisecond, "Changes are coalesced and sent to clients once per tick.")
	f.DurationVar(&c.AlertPoll, "topomap.alert-poll", 5*time.Second, "How often firing alerts are polled.")
	f.DurationVar(&c.StaleAfter, "topomap.stale-after", 2*time.Minute, "An element not observed for this long turns unknown.")
	f.DurationVar(&c.ExpireAfter, "topomap.expire-after", 15*time.Minute, "An element not in the inventory and not observed for this long is removed.")
	f.DurationVar(&c.OSDLatencyDegraded, "topomap.osd-latency-degraded", 5*time.Millisecond, "An OSD whose commit/apply/read/write latency exceeds this is degraded.")
	f.DurationVar(&c.ProbeRTTDegraded, "topomap.probe-rtt-degraded", 250*time.Millisecond, "A probe whose round trip exceeds this is degraded.")
	f.Float64Var(&c.FlowErrorDegraded, "topomap.flow-error-degraded", 0.05, "A flow edge whose error ratio reaches this is degraded.")
	f.IntVar(&c.History, "topomap.history", 1200, "Deltas kept for clients that resume (ticks).")
	f.IntVar(&c.HistoryBytes, "topomap.history-bytes", 64<<20, "Upper bound on the encoded size of the kept deltas.")
	f.IntVar(&c.ClientBufferBytes, "topomap.client-buffer-bytes", 8<<20, "Bytes queued for one client before it is marked slow and resynced with a snapshot.")
	f.IntVar(&c.MaxMessageBytes, "topomap.max-message-bytes", 4096, "Largest message a client may send.")
	f.DurationVar(&c.ClientTimeout, "topomap.client-timeout", 30*time.Second, "A websocket client that answers no ping and sends nothing for this long, or whose socket stays full this long (at most 10s), has stopped reading and is closed (1008).")
	f.StringVar(&c.TokenFile, "topomap.token-file", "", "File holding a token of the map's own for the websocket and snapshot (default: $"+TokenEnv+"); without one the map takes the API token.")
	f.BoolVar(&c.Anonymous, "topomap.anonymous", false, "Serve the websocket and snapshot without a token (lab only).")
	f.Var(&c.AllowedOrigins, "topomap.allowed-origins", "Extra browser origins allowed to open the websocket (comma-separated); the page's own origin is always allowed.")
}

// Validate names the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.Tick <= 0:
		return errors.New("topomap.tick: must be positive")
	case c.AlertPoll <= 0:
		return errors.New("topomap.alert_poll: must be positive")
	case c.StaleAfter <= 0:
		return errors.New("topomap.stale_after: must be positive")
	case c.ExpireAfter < c.StaleAfter:
		return errors.New("topomap.expire_after: must not be shorter than stale_after")
	case c.History < 1:
		return errors.New("topomap.history: must be at least 1")
	case c.HistoryBytes < 1:
		return errors.New("topomap.history_bytes: must be positive")
	case c.ClientBufferBytes < 1024:
		return errors.New("topomap.client_buffer_bytes: must be at least 1024")
	case c.MaxMessageBytes < 64:
		return errors.New("topomap.max_message_bytes: must be at least 64")
	case c.ClientTimeout <= 0:
		return errors.New("topomap.client_timeout: must be positive")
	case c.FlowErrorDegraded <= 0 || c.FlowErrorDegraded > 1:
		return errors.New("topomap.flow_error_degraded: must be in (0, 1]")
	}
	for _, o := range c.AllowedOrigins {
		if _, ok := originKey(o); !ok {
			return fmt.Errorf("topomap.allowed_origins: %q is not an origin (scheme://host[:port], http or https)", o)
		}
	}
	return nil
}

// token is where the map's own token is: token_file, else $MERIDIAN_TOPOMAP_TOKEN.
func (c *Config) token() secret.Source {
	return secret.Source{File: c.TokenFile, Env: TokenEnv, Field: "topomap.token_file"}
}
