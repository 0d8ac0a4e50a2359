package steering

import (
	"flag"
	"fmt"
	"time"

	"github.com/meridianhq/meridian/steering/authdns"
	"github.com/meridianhq/meridian/steering/rfc2136"
)

// Config is the steering module: the weight engine, the built-in GeoDNS, the RFC 2136
// publisher and the override API.
type Config struct {
	TickInterval  time.Duration `yaml:"tick_interval"`  // how often weights are recomputed
	FailThreshold int           `yaml:"fail_threshold"` // consecutive probe failures that make a vantage vote "down"
	Quorum        int           `yaml:"quorum"`         // vantages that must vote "down"; 0 = a majority of those reporting
	Stale         time.Duration `yaml:"stale"`          // a vantage silent this long does not vote, its RTT is not used
	MinHold       time.Duration `yaml:"min_hold"`       // a drained POP stays drained at least this long
	RampStep      float64       `yaml:"ramp_step"`      // max weight change per ramp interval, as a fraction of the POP's base weight
	RampInterval  time.Duration `yaml:"ramp_interval"`
	TicketFactor  float64       `yaml:"ticket_factor"` // weight multiplier under a ticket-severity SLO burn
	RTTSlack      float64       `yaml:"rtt_slack"`     // POPs within this fraction of the best RTT share a region's traffic
	// RTTHysteresis is the minimum relative improvement before RTT moves traffic: a POP
	// joins a region's set only when its cost is this fraction inside the sharing band,
	// and a serving POP leaves only when it is this fraction outside it.
	RTTHysteresis float64 `yaml:"rtt_hysteresis"`
	// RTTDwell is how long the same RTT-driven change must be wanted, tick after tick,
	// before it applies: noise that crosses the band for a few probes moves nothing.
	RTTDwell time.Duration `yaml:"rtt_dwell"`

	// Shed shapes weights by each POP's measured load against its inventory capacity.
	Shed ShedConfig `yaml:"shed"`

	Overrides []Override `yaml:"overrides"`

	// APIListen, when set, serves the override API on its own listener, which then
	// requires the token from APITokenFile or $MERIDIAN_STEERING_API_TOKEN.
	APIListen    string `yaml:"api_listen"`
	APITokenFile string `yaml:"api_token_file" secret:"MERIDIAN_STEERING_API_TOKEN"`

	DNS     authdns.Config `yaml:"dns"`
	RFC2136 rfc2136.Config `yaml:"rfc2136"`
}

// ShedConfig is capacity-aware steering (README.md, "Capacity"): watermarks as fractions of
// each POP's inventory capacity (capacity.sessions_per_second).
type ShedConfig struct {
	Low  float64 `yaml:"low"`  // a POP planned above this fraction of its capacity takes less new traffic
	High float64 `yaml:"high"` // never planned above this while another allowed POP has headroom under it
	// Floor is the weight factor a shedding POP keeps at the high watermark.
	Floor float64 `yaml:"floor"`
	// Stale: a POP's load measured longer ago than this is ignored (the POP counts as
	// unmeasured: never shed, never a spread target).
	Stale time.Duration `yaml:"stale"`
	// Settle: a POP's load re-estimates the demand of the regions it serves only once no
	// weight to it has changed for this long, so that the load reflects the weights that
	// split it (DNS TTL plus the load's rate window).
	Settle time.Duration `yaml:"settle"`
}

// Reloadable are the fields a running module takes from a reloaded configuration
// (Engine.ApplyOverrides); the others keep their value until a restart.
var Reloadable = []string{"overrides"}

// RegisterFlags registers the steering flags with the "steering." prefix and sets defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.TickInterval, "steering.tick-interval", 200*time.Millisecond, "How often weights are recomputed.")
	f.IntVar(&c.FailThreshold, "steering.fail-threshold", 2, "Consecutive probe failures after which a vantage votes a POP down.")
	f.IntVar(&c.Quorum, "steering.quorum", 0, "Vantages that must vote a POP down to drain it; 0 = a majority of the reporting vantages.")
	f.DurationVar(&c.Stale, "steering.stale", 10*time.Second, "A vantage silent this long does not vote and its RTTs are not used.")
	f.DurationVar(&c.MinHold, "steering.min-hold", 30*time.Second, "Minimum time a drained POP stays drained.")
	f.Float64Var(&c.RampStep, "steering.ramp-step", 0.25, "Max weight change per ramp interval, as a fraction of the POP's base weight.")
	f.DurationVar(&c.RampInterval, "steering.ramp-interval", 5*time.Second, "Interval between ramp steps.")
	f.Float64Var(&c.TicketFactor, "steering.ticket-factor", 0.5, "Weight multiplier while a ticket-severity SLO alert fires for the POP.")
	f.Float64Var(&c.RTTSlack, "steering.rtt-slack", 0.2, "POPs within this fraction of the best RTT share a region's traffic.")
	f.Float64Var(&c.RTTHysteresis, "steering.rtt-hysteresis", 0.1, "Minimum relative RTT improvement before traffic moves: a POP joins a region this fraction inside the sharing band and leaves this fraction outside it.")
	f.DurationVar(&c.RTTDwell, "steering.rtt-dwell", time.Minute, "How long an RTT-driven change must be wanted continuously before it applies.")
	f.StringVar(&c.APIListen, "steering.api-listen", "", "Serve the override API on its own listener (token required); empty: mounted by the main server only.")
	f.StringVar(&c.APITokenFile, "steering.api-token-file", "", "File holding the override API token (else $MERIDIAN_STEERING_API_TOKEN).")
	f.Float64Var(&c.Shed.Low, "steering.shed.low", 0.7, "Low watermark, a fraction of a POP's capacity: above it the POP takes less new traffic.")
	f.Float64Var(&c.Shed.High, "steering.shed.high", 0.9, "High watermark, a fraction of a POP's capacity: no POP is planned above it while another allowed POP has headroom.")
	f.Float64Var(&c.Shed.Floor, "steering.shed.floor", 0, "Weight factor a shedding POP keeps at the high watermark (0: it sheds everything it can).")
	f.DurationVar(&c.Shed.Stale, "steering.shed.stale", 30*time.Second, "A POP's load measured longer ago than this is ignored: the POP is neither shed nor a spread target.")
	f.DurationVar(&c.Shed.Settle, "steering.shed.settle", time.Minute, "A POP's load re-estimates the demand of the regions it serves only after no weight to it changed for this long.")
	c.DNS.RegisterFlags("steering.dns.", f)
	c.RFC2136.RegisterFlags(f)
}

// Validate names the offending field.
func (c *Config) Validate() error {
	switch {
	case c.TickInterval <= 0:
		return fmt.Errorf("steering.tick_interval: must be > 0")
	case c.FailThreshold < 1:
		return fmt.Errorf("steering.fail_threshold: must be >= 1")
	case c.Quorum < 0:
		return fmt.Errorf("steering.quorum: must be >= 0")
	case c.Stale <= 0:
		return fmt.Errorf("steering.stale: must be > 0")
	case c.MinHold < 0:
		return fmt.Errorf("steering.min_hold: must be >= 0")
	case c.RampStep <= 0 || c.RampStep > 1:
		return fmt.Errorf("steering.ramp_step: must be in (0,1]")
	case c.RampInterval <= 0:
		return fmt.Errorf("steering.ramp_interval: must be > 0")
	case c.TicketFactor < 0 || c.TicketFactor > 1:
		return fmt.Errorf("steering.ticket_factor: must be in [0,1]")
	case c.RTTSlack < 0:
		return fmt.Errorf("steering.rtt_slack: must be >= 0")
	case c.RTTHysteresis < 0 || c.RTTHysteresis >= 1:
		return fmt.Errorf("steering.rtt_hysteresis: must be in [0,1)")
	case c.RTTDwell < 0:
		return fmt.Errorf("steering.rtt_dwell: must be >= 0")
	case !(c.Shed.Low > 0 && c.Shed.Low < c.Shed.High):
		return fmt.Errorf("steering.shed.low: %v must be > 0 and below steering.shed.high (%v)", c.Shed.Low, c.Shed.High)
	case !(c.Shed.High <= 1):
		return fmt.Errorf("steering.shed.high: %v must be at most 1 (the capacity itself)", c.Shed.High)
	case !(c.Shed.Floor >= 0 && c.Shed.Floor < 1):
		return fmt.Errorf("steering.shed.floor: must be in [0,1)")
	case c.Shed.Stale <= 0:
		return fmt.Errorf("steering.shed.stale: must be > 0")
	case c.Shed.Settle < 0:
		return fmt.Errorf("steering.shed.settle: must be >= 0")
	}
	if c.DNS.Listen != "" {
		if err := c.DNS.Validate(); err != nil {
			return err
		}
	}
	return c.RFC2136.Validate()
}
