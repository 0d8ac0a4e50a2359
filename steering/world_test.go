package steering

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// The test world: a user in France is nearest Nuremberg and falls back to New York;
// Sweden's data may only be served from Nuremberg (residency). Client addresses come
// from the MaxMind test database (testdata/geoip/GeoIP2-City-Test.mmdb):
// 2a02:cfc0::/29 is FR, 81.2.69.142/31 GB, 216.160.83.56/29 US, 89.160.20.128/25 SE,
// 175.16.199.0/24 CN (continent AS).
const service = "api.example.net."

var vip = map[string]netip.Addr{
	"nbg": netip.MustParseAddr("127.0.1.1"),
	"nyc": netip.MustParseAddr("127.0.1.2"),
	"lon": netip.MustParseAddr("127.0.1.3"),
	"tyo": netip.MustParseAddr("127.0.1.4"),
}

func testInventory() *inventory.Inventory {
	pfx := netip.MustParsePrefix
	inv := &inventory.Inventory{
		Sites: []inventory.Site{
			{Name: "nuremberg", Region: "europe", Role: "muscle", City: "Nuremberg", Lat: 49.45, Lon: 11.08},
			{Name: "newyork", Region: "north-america", Role: "vault", City: "New York", Lat: 40.71, Lon: -74.01},
			{Name: "london", Region: "europe", Role: "edge", City: "London", Lat: 51.51, Lon: -0.13},
			{Name: "paris", Region: "europe", Role: "edge", City: "Paris", Lat: 48.86, Lon: 2.35},
			{Name: "tokyo", Region: "asia", Role: "brain", City: "Tokyo", Lat: 35.68, Lon: 139.69},
			{Name: "stockholm", Region: "europe", Role: "edge", City: "Stockholm", Lat: 59.33, Lon: 18.07},
			{Name: "lab", Region: "europe", Role: "edge", City: "Lab", Lat: 0, Lon: 0},
		},
		POPs: []inventory.POP{
			{Name: "nbg", Site: "nuremberg", VIPs: []netip.Addr{vip["nbg"], netip.MustParseAddr("2001:db8::1")}},
			{Name: "nyc", Site: "newyork", VIPs: []netip.Addr{vip["nyc"], netip.MustParseAddr("2001:db8::2")}},
			{Name: "lon", Site: "london", VIPs: []netip.Addr{vip["lon"]}},
			{Name: "tyo", Site: "tokyo", VIPs: []netip.Addr{vip["tyo"]}},
		},
		// Written as an operator might: the DNS path must still find it.
		Services: []inventory.Service{{Name: "API.example.net", POPs: []string{"nbg", "nyc", "lon", "tyo"}}},
		ClientRegions: []inventory.ClientRegion{
			{Name: "france", Countries: []string{"FR"}, AllowedPOPs: []string{"nbg", "nyc"}, Vantage: "paris", SamplePrefix: pfx("2a02:cfc0::/32")},
			{Name: "uk", Countries: []string{"GB"}, Vantage: "london", SamplePrefix: pfx("81.2.69.142/31")},
			{Name: "us", Countries: []string{"US"}, Vantage: "newyork", SamplePrefix: pfx("216.160.83.56/29"), CIDRs: []netip.Prefix{pfx("81.2.69.160/27")}},
			{Name: "asia", Continents: []string{"AS"}, Vantage: "tokyo", SamplePrefix: pfx("175.16.199.0/24")},
			{Name: "sweden", Countries: []string{"SE"}, AllowedPOPs: []string{"nbg"}, Vantage: "stockholm", SamplePrefix: pfx("89.160.20.128/25")},
		},
	}
	if err := inv.Validate(); err != nil {
		panic(err)
	}
	return inv
}

// testConfig is the flag defaults with the DNS server off and a fast tick.
func testConfig(t testing.TB) Config {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("test", flag.PanicOnError))
	cfg.DNS.Listen = ""
	cfg.TickInterval = 20 * time.Millisecond
	return cfg
}

// recorder is a pipeline.Appender keeping what it gets, and feeding probes to a consumer
// the way the pipeline fans records out.
type recorder struct {
	mu       sync.Mutex
	recs     []pipeline.Record
	consumer pipeline.Consumer
}

func (r *recorder) Append(_ context.Context, recs ...pipeline.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, recs...)
	c := r.consumer
	r.mu.Unlock()
	if c != nil {
		c.Consume(recs)
	}
	return nil
}

func (r *recorder) decisions() []*pipeline.SteeringDecision {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*pipeline.SteeringDecision
	for _, rec := range r.recs {
		if d, ok := rec.(*pipeline.SteeringDecision); ok {
			out = append(out, d)
		}
	}
	return out
}

// firing is an alerts.Source with a settable list.
type firing struct {
	mu sync.Mutex
	a  []alerts.Alert
}

func (f *firing) Firing() []alerts.Alert {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]alerts.Alert(nil), f.a...)
}

func (f *firing) set(a ...alerts.Alert) {
	f.mu.Lock()
	f.a = a
	f.mu.Unlock()
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestRegistry() *prometheus.Registry { return prometheus.NewRegistry() }
