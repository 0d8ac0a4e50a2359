package steering

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestConfigValidateNamesField(t *testing.T) {
	for _, tc := range []struct {
		mut   func(*Config)
		field string
	}{
		{func(c *Config) { c.RampStep = 0 }, "steering.ramp_step"},
		{func(c *Config) { c.FailThreshold = 0 }, "steering.fail_threshold"},
		{func(c *Config) { c.RTTHysteresis = 1 }, "steering.rtt_hysteresis"},
		{func(c *Config) { c.RTTDwell = -time.Second }, "steering.rtt_dwell"},
		{func(c *Config) { c.Shed.Low = 0.95 }, "steering.shed.low: 0.95 must be > 0 and below steering.shed.high (0.9)"},
		{func(c *Config) { c.Shed.Low = 0 }, "steering.shed.low"},
		{func(c *Config) { c.Shed.High = 1.5 }, "steering.shed.high"},
		{func(c *Config) { c.Shed.Floor = 1 }, "steering.shed.floor"},
		{func(c *Config) { c.Shed.Stale = 0 }, "steering.shed.stale"},
		{func(c *Config) { c.Shed.Settle = -time.Second }, "steering.shed.settle"},
		{func(c *Config) { c.DNS.Listen = "127.0.0.1:53"; c.DNS.Zone.Origin = "" }, "steering.dns.zone.origin"},
		{func(c *Config) { c.RFC2136.Server = "127.0.0.1:53"; c.RFC2136.Zone = "example.net." }, "steering.rfc2136.key_name"},
	} {
		cfg := testConfig(t)
		tc.mut(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("err = %v, want it to name %s", err, tc.field)
		}
	}
	cfg := testConfig(t)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestConfigYAML(t *testing.T) {
	cfg := testConfig(t)
	doc := `
min_hold: 45s
shed: {low: 0.6, high: 0.85}
overrides:
  - {action: drain, pop: nyc, reason: maintenance}
dns:
  listen: 127.0.0.1:5353
  ttl: 20
  geoip_db: /var/lib/GeoIP/GeoLite2-City.mmdb
  zone: {origin: example.net., ns: [ns1.example.net.]}
rfc2136: {server: "127.0.0.1:53", zone: example.net., key_name: meridian, key_secret_file: /run/secrets/tsig}
`
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.MinHold.Seconds() != 45 || cfg.DNS.TTL != 20 || cfg.DNS.Zone.Origin != "example.net." || cfg.Overrides[0].POP != "nyc" || cfg.RFC2136.KeySecretFile != "/run/secrets/tsig" ||
		cfg.Shed.Low != 0.6 || cfg.Shed.High != 0.85 || cfg.Shed.Stale != 30*time.Second {
		t.Fatalf("decoded %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
