package slo

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Window is one of the four multi-window multi-burn-rate alert windows: an alert fires
// when ErrorBudgetPercent of the period's budget would be spent in LongWindow, and the
// ShortWindow still burns at that rate (so it resolves soon after the problem is gone).
type Window struct {
	ErrorBudgetPercent float64
	ShortWindow        time.Duration
	LongWindow         time.Duration
}

// Windows is the alert window set of one SLO period.
type Windows struct {
	Period      time.Duration
	PageQuick   Window
	PageSlow    Window
	TicketQuick Window
	TicketSlow  Window
}

// BurnFactor is the speed at which w's share of the budget is spent over w's long
// window. Sloth's arithmetic, in the same order, so the factors print identically
// (30d: 14.4, 6, 3, 1; 28d: 13.44, 5.6, 2.8, 0.9333…).
func (ws Windows) BurnFactor(w Window) float64 {
	hours := w.ErrorBudgetPercent * ws.Period.Hours() / 100
	return hours / w.LongWindow.Hours()
}

// GoogleWindows is the SRE workbook's window set for a period (2% of the budget in 1h,
// 5% in 6h, 10% in 1d, 10% in 3d). Sloth ships it for 28d and 30d; Meridian uses it for
// any period without a custom window set, which scales the burn factors with the period
// exactly as Sloth's 28d file does against its 30d one.
func GoogleWindows(period time.Duration) Windows {
	return Windows{
		Period:      period,
		PageQuick:   Window{2, 5 * time.Minute, time.Hour},
		PageSlow:    Window{5, 30 * time.Minute, 6 * time.Hour},
		TicketQuick: Window{10, 2 * time.Hour, 24 * time.Hour},
		TicketSlow:  Window{10, 6 * time.Hour, 72 * time.Hour},
	}
}

// windowsFile is Sloth's AlertWindows document (sloth.slok.dev/v1), as in its
// examples/windows/7d.yaml.
type windowsFile struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Spec       struct {
		SLOPeriod model.Duration `yaml:"sloPeriod"`
		Page      struct {
			Quick windowFile `yaml:"quick"`
			Slow  windowFile `yaml:"slow"`
		} `yaml:"page"`
		Ticket struct {
			Quick windowFile `yaml:"quick"`
			Slow  windowFile `yaml:"slow"`
		} `yaml:"ticket"`
	} `yaml:"spec"`
}

type windowFile struct {
	ErrorBudgetPercent float64        `yaml:"errorBudgetPercent"`
	ShortWindow        model.Duration `yaml:"shortWindow"`
	LongWindow         model.Duration `yaml:"longWindow"`
}

func (w windowFile) window() Window {
	return Window{w.ErrorBudgetPercent, time.Duration(w.ShortWindow), time.Duration(w.LongWindow)}
}

// LoadWindows reads a Sloth AlertWindows file.
func LoadWindows(path string) (Windows, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Windows{}, err
	}
	var f windowsFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return Windows{}, fmt.Errorf("%s: %w", path, err)
	}
	if f.APIVersion != k8sAPIVersion || f.Kind != "AlertWindows" {
		return Windows{}, fmt.Errorf("%s: want apiVersion %s kind AlertWindows, got %q %q", path, k8sAPIVersion, f.APIVersion, f.Kind)
	}
	ws := Windows{
		Period:      time.Duration(f.Spec.SLOPeriod),
		PageQuick:   f.Spec.Page.Quick.window(),
		PageSlow:    f.Spec.Page.Slow.window(),
		TicketQuick: f.Spec.Ticket.Quick.window(),
		TicketSlow:  f.Spec.Ticket.Slow.window(),
	}
	if err := ws.validate(); err != nil {
		return Windows{}, fmt.Errorf("%s: %w", path, err)
	}
	return ws, nil
}

func (ws Windows) validate() error {
	if ws.Period <= 0 {
		return fmt.Errorf("spec.sloPeriod is required")
	}
	for name, w := range map[string]Window{"page.quick": ws.PageQuick, "page.slow": ws.PageSlow, "ticket.quick": ws.TicketQuick, "ticket.slow": ws.TicketSlow} {
		switch {
		case w.ErrorBudgetPercent <= 0 || w.ErrorBudgetPercent > 100:
			return fmt.Errorf("spec.%s.errorBudgetPercent %v must be in (0, 100]", name, w.ErrorBudgetPercent)
		case w.ShortWindow <= 0 || w.LongWindow <= 0:
			return fmt.Errorf("spec.%s: shortWindow and longWindow are required", name)
		case w.ShortWindow >= w.LongWindow:
			return fmt.Errorf("spec.%s: shortWindow %s must be shorter than longWindow %s", name, promDuration(w.ShortWindow), promDuration(w.LongWindow))
		case w.LongWindow >= ws.Period:
			return fmt.Errorf("spec.%s: longWindow %s is not shorter than the SLO period %s", name, promDuration(w.LongWindow), promDuration(ws.Period))
		}
	}
	return nil
}

// windowsList is the distinct windows in Sloth's order: page quick short/long, page
// slow short/long, ticket quick short/long, ticket slow short/long, deduplicated and
// sorted by length.
func (ws Windows) list() []time.Duration {
	all := []time.Duration{ws.PageQuick.ShortWindow, ws.PageSlow.ShortWindow, ws.PageQuick.LongWindow, ws.TicketQuick.ShortWindow, ws.PageSlow.LongWindow, ws.TicketQuick.LongWindow, ws.TicketSlow.LongWindow, ws.TicketSlow.ShortWindow}
	seen := map[time.Duration]bool{}
	var out []time.Duration
	for _, d := range all {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	// Insertion sort: at most 8 entries.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// promDuration prints a duration as Sloth does (Prometheus's model.Duration): weeks and
// years only when they divide it, so 36h is "1d12h", 7d "1w", 28d "4w", 30d "30d". These
// names are in recording rule names (slo:sli_error:ratio_rate4w) and sloth_window.
func promDuration(d time.Duration) string { return model.Duration(d).String() }
