package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/testlog"
	"github.com/meridianhq/meridian/internal/wait"
)

const reloadInventory = `inventory:
  sites:
    - {name: nuremberg, region: europe, role: muscle, lat: 49.45, lon: 11.08}
    - {name: newyork, region: north-america, role: vault, lat: 40.71, lon: -74.01}
  pops:
    - {name: nbg, site: nuremberg, vips: [127.0.1.1]}
    - {name: nyc, site: newyork, vips: [127.0.1.2]}
  services:
    - {name: api.example.net., pops: [nbg, nyc]}
  client_regions:
    - {name: germany, countries: [DE], allowed_pops: [nbg, nyc]}
`

// TestConfigReload runs Meridian from a file, edits it and the SLO spec it names, and
// checks what a reload applies at once, what it refuses (keeping the running
// configuration), and what it leaves for a restart.
func TestConfigReload(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "pop.yaml")
	file := filepath.Join(dir, "meridian.yaml")
	specData, err := os.ReadFile("../../testdata/slo/ruler/fast-pop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, spec, string(specData))
	windows, err := filepath.Abs("../../testdata/slo/ruler/fast-windows.yaml") // a relative path is the config file's
	if err != nil {
		t.Fatal(err)
	}
	config := func(extra string) string {
		return reloadInventory + "ruler:\n  spec_files: [" + spec + "]\n  window_files: [" + windows + "]\n" + extra
	}
	replaceFile(t, file, config(""))

	r := startReloadable(t, append(serveArgs(t, "reload"), "-config.file="+file)...)
	a, base, logs, level := r.app, r.base, r.logs, r.level
	metric := func(name string, labels ...string) float64 { return promtest.Sum(t, a.reg, name, labels...) }
	overrides := func() string { body, _ := get(t, base+"/api/steering/overrides", "s3cret"); return body }

	// A drain in the file and a log level take effect without a restart.
	replaceFile(t, file, config("log_level: debug\nsteering:\n  overrides:\n    - {action: drain, pop: nbg, reason: maintenance}\n"))
	wait.Until(t, 10*time.Second, "the reload", func() bool { return metric("meridian_config_reloads_total", "result", "success") == 1 })
	if !strings.Contains(overrides(), `"pop":"nbg"`) || !strings.Contains(overrides(), `"source":"config"`) || level.Level() != slog.LevelDebug {
		t.Errorf("after the reload: overrides %s, log level %v", overrides(), level.Level())
	}
	if metric("meridian_config_restart_required") != 0 {
		t.Errorf("a reload of reloadable fields says a restart is needed; log:\n%s", logs.String())
	}
	before := overrides()

	// An edited SLO spec is a change too: its rules replace the old ones.
	replaceFile(t, spec, strings.Replace(string(specData), "name: MeridianPOPAvailability", "name: MeridianPOPAvailabilityEdited", 1))
	wait.Until(t, 10*time.Second, "the edited spec's alert", func() bool {
		body, _ := get(t, base+"/prometheus/api/v1/rules", "s3cret")
		return strings.Contains(body, "MeridianPOPAvailabilityEdited")
	})
	if after := overrides(); after != before {
		t.Errorf("reloading an unchanged override changed it:\n%s\n%s", before, after)
	}

	// A broken file changes nothing and is reported once, with its line.
	replaceFile(t, file, config("steering:\n  overrides:\n    - {action: drain, pop: nbg}\n  tick_intervall: 1s\n"))
	wait.Until(t, 10*time.Second, "the failed reload", func() bool { return metric("meridian_config_last_reload_successful") == 0 })
	if !strings.Contains(logs.String(), file+":18: field steering.tick_intervall") || overrides() != before || level.Level() != slog.LevelDebug {
		t.Errorf("after a broken file: overrides %s, level %v, log:\n%s", overrides(), level.Level(), logs.String())
	}
	// An override the inventory refuses fails the same way.
	replaceFile(t, file, config("steering:\n  overrides:\n    - {action: drain, pop: zrh}\n"))
	wait.Until(t, 10*time.Second, "the second failed reload", func() bool { return metric("meridian_config_reloads_total", "result", "failure") == 2 })
	if !strings.Contains(logs.String(), `steering.overrides[0]: unknown POP \"zrh\"`) || overrides() != before {
		t.Errorf("after an unknown POP: overrides %s, log:\n%s", overrides(), logs.String())
	}

	// A change only a restart can apply is applied as far as it can be, and said.
	replaceFile(t, file, config("storage:\n  ttl:\n    flows: 48h\n"))
	wait.Until(t, 10*time.Second, "the reload after the fix", func() bool { return metric("meridian_config_last_reload_successful") == 1 })
	if metric("meridian_config_restart_required") != 1 || !strings.Contains(logs.String(), "storage") || strings.Contains(overrides(), `"pop":"nbg"`) {
		t.Errorf("restart required %v, overrides %s, log:\n%s", metric("meridian_config_restart_required"), overrides(), logs.String())
	}

	// POST /-/reload reloads at once, with the API token.
	successes := metric("meridian_config_reloads_total", "result", "success")
	for _, tc := range []struct {
		method, token string
		code          int
	}{{"POST", "", http.StatusUnauthorized}, {"GET", "s3cret", http.StatusMethodNotAllowed}, {"POST", "s3cret", http.StatusOK}} {
		req, _ := http.NewRequest(tc.method, base+"/-/reload", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s /-/reload with token %q: %d, want %d", tc.method, tc.token, resp.StatusCode, tc.code)
		}
	}
	if got := metric("meridian_config_reloads_total", "result", "success"); got != successes+1 {
		t.Errorf("successful reloads %v after POST /-/reload, want %v", got, successes+1)
	}
}

// TestInventoryReloadWithoutRestart: a node, a POP, a service and a client region added
// to the file's inventory reach the live inventory, the map, steering's weights and the
// built-in GeoDNS's answers on reload, without a restart, with steering and the ruler
// running; a removed service is NXDOMAIN again.
func TestInventoryReloadWithoutRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "meridian.yaml")
	replaceFile(t, file, reloadInventory)
	r := startReloadable(t, append(serveArgs(t, "inventory_reload"), "-config.file="+file, "-target=topomap,steering", "-topomap.anonymous",
		"-steering.dns.listen=127.0.0.1:0", "-steering.dns.zone=example.net.", "-steering.dns.udp-listeners=1")...)
	metric := func(name string, labels ...string) float64 { return promtest.Sum(t, r.app.reg, name, labels...) }
	v := metric("meridian_inventory_version")
	dnsAddr := r.app.steering.DNS.Addr().String()
	// ask returns the A record and ECS scope the GeoDNS answers name with for a client
	// in 203.0.113.0/24, or the rcode when it has no answer.
	ask := func(name string) (string, int) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(203, 0, 113, 0).To4()})
		r, err := dns.Exchange(m, dnsAddr)
		if err != nil {
			return err.Error(), 0
		}
		if len(r.Answer) == 0 {
			return dns.RcodeToString[r.Rcode], 0
		}
		return r.Answer[0].(*dns.A).A.String(), int(r.IsEdns0().Option[0].(*dns.EDNS0_SUBNET).SourceScope)
	}
	if got, _ := ask("img.example.net."); got != "NXDOMAIN" {
		t.Fatalf("img.example.net. before it is in the file: %s, want NXDOMAIN", got)
	}

	changed := strings.Replace(reloadInventory, "  pops:", "  nodes:\n    - {name: nbg-9, site: nuremberg}\n  pops:", 1)
	changed = strings.Replace(changed, "    - {name: nyc, site: newyork, vips: [127.0.1.2]}\n", "    - {name: nyc, site: newyork, vips: [127.0.1.2]}\n    - {name: nbg2, site: nuremberg, vips: [127.0.1.3]}\n", 1)
	changed = strings.Replace(changed, "pops: [nbg, nyc]}", "pops: [nbg, nyc, nbg2]}\n    - {name: img.example.net., pops: [nbg, nyc]}", 1)
	changed += "    - {name: us-east, cidrs: [203.0.113.0/24], vantage: newyork}\n"
	start := time.Now()
	replaceFile(t, file, changed)
	// The new region is answered from its nearest POP (New York), located by its CIDR.
	wait.Until(t, 10*time.Second, "the added node, POP, service and region in the inventory, the map, steering and the GeoDNS", func() bool {
		body, _ := get(t, r.base+"/map/api/snapshot", "")
		weights, _ := get(t, r.base+"/api/steering/weights", "s3cret")
		img, scope := ask("img.example.net.")
		return metric("meridian_inventory_version") > v && strings.Contains(body, `"id":"node:nbg-9"`) && strings.Contains(weights, `"pop":"nbg2"`) && img == "127.0.1.2" && scope == 24
	})
	t.Logf("file written -> the new service and region answered: %v", time.Since(start).Round(time.Millisecond))
	if metric("meridian_config_restart_required") != 0 {
		t.Fatal("an inventory change asks for a restart")
	}

	replaceFile(t, file, reloadInventory)
	wait.Until(t, 10*time.Second, "img.example.net. NXDOMAIN after its removal from the file", func() bool {
		got, _ := ask("img.example.net.")
		return got == "NXDOMAIN"
	})
	if metric("meridian_config_restart_required") != 0 || metric("meridian_steering_inventory_refused_total") != 0 {
		t.Fatalf("restart required %v, steering refusals %v", metric("meridian_config_restart_required"), metric("meridian_steering_inventory_refused_total"))
	}
}

// replaceFile writes body to path by rename, as editors and Kubernetes ConfigMaps do, so
// that a reload never reads half a file.
func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// reloadingApp is a started app that rereads its flags and -config.file every 20ms.
type reloadingApp struct {
	app   *app
	base  string
	logs  *testlog.Buffer // printed if the test fails
	level *slog.LevelVar
}

func startReloadable(t *testing.T, args ...string) reloadingApp {
	t.Helper()
	args = append(args, "-config.reload-interval=20ms")
	cfg, err := parseConfig(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := reloadingApp{logs: new(testlog.Buffer), level: new(slog.LevelVar)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", r.logs.String())
		}
	})
	r.app = newApp(cfg, newLogger(cfg, r.logs, r.level))
	r.app.reloader = newReloader(r.app, func() (*Config, error) { return parseConfig(args, io.Discard) }, r.level)
	r.base = startApp(t, r.app)
	return r
}
